package nat

import (
	"net/netip"
	"testing"
)

var (
	srvP  = netip.MustParseAddrPort("198.51.100.10:3478")
	srvAP = netip.MustParseAddrPort("198.51.100.11:3478") // alternate IP, primary port
	srvO  = netip.MustParseAddrPort("198.51.100.11:3479") // OTHER-ADDRESS
	srvPA = netip.MustParseAddrPort("198.51.100.10:3479") // primary IP, alternate port
	lan   = netip.MustParseAddrPort("192.168.1.10:40000")
	pub   = netip.MustParseAddrPort("203.0.113.2:40000")
)

func ans(server, mapped netip.AddrPort) obs {
	return obs{ran: true, answered: true, local: lan, server: server, mapped: mapped, from: server, other: srvO}
}

func silent(server netip.AddrPort) obs { return obs{ran: true, local: lan, server: server} }

func TestMakePlan(t *testing.T) {
	plain := ans(netip.MustParseAddrPort("192.0.2.50:3478"), pub)
	plain.other = netip.AddrPort{}
	bogus := ans(srvP, pub)
	bogus.other = netip.MustParseAddrPort("198.51.100.10:3479") // same IP
	tests := []struct {
		name      string
		first     []obs
		hairpin   bool
		wantRFC   int
		wantMap   int
		wantHair  int
		wantCheck Support
	}{
		{"none answered", []obs{silent(srvP)}, true, -1, 0, -1, SupportUnknown},
		{"rfc5780 server", []obs{ans(srvP, pub)}, true, 0, 2, 0, SupportUnknown},
		{"hairpin off", []obs{ans(srvP, pub)}, false, 0, 2, -1, SupportUnknown},
		{"plain only", []obs{plain}, true, -1, 0, 0, NotSupported},
		{"plain then rfc", []obs{plain, ans(srvP, pub)}, true, 1, 2, 0, SupportUnknown},
		{"bogus other address", []obs{bogus}, true, -1, 0, 0, Broken},
		{"silent then rfc", []obs{silent(plain.server), ans(srvP, pub)}, true, 1, 2, 1, SupportUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := makePlan(tt.first, tt.hairpin)
			if p.rfc != tt.wantRFC || len(p.mapping) != tt.wantMap || p.hairpin != tt.wantHair || p.check.RFC5780 != tt.wantCheck {
				t.Errorf("plan %+v", p)
			}
			if p.rfc >= 0 && (p.mapping[0] != srvAP || p.mapping[1] != srvO || !p.filtering) {
				t.Errorf("mapping targets %v", p.mapping)
			}
		})
	}
}

func TestOtherAddressProblem(t *testing.T) {
	for _, tt := range []struct {
		other string
		ok    bool
	}{
		{"198.51.100.11:3479", true},
		{"198.51.100.10:3479", false},
		{"198.51.100.11:3478", false},
		{"0.0.0.0:3479", false},
		{"127.0.0.1:3479", false},
		{"[2001:db8::1]:3479", false},
		{"224.0.0.1:3479", false},
	} {
		if got := otherAddressProblem(srvP, netip.MustParseAddrPort(tt.other)) == ""; got != tt.ok {
			t.Errorf("%s: ok=%v, want %v", tt.other, got, tt.ok)
		}
	}
}

// rfcEvidence builds the evidence of a full RFC 5780 probe: mappings for
// the three destinations, whether each filtering test got through.
func rfcEvidence(m1, m2, m3 netip.AddrPort, ipPort, port bool) evidence {
	first := []obs{ans(srvP, m1)}
	ev := evidence{first: first, plan: makePlan(first, true)}
	ev.mapping = []obs{ans(srvAP, m2), ans(srvO, m3)}
	ev.filterIPPort = silent(srvP)
	ev.filterPort = silent(srvP)
	if ipPort {
		ev.filterIPPort = ans(srvP, m1)
		ev.filterIPPort.from = srvO
	}
	if port {
		ev.filterPort = ans(srvP, m1)
		ev.filterPort.from = srvPA
	}
	if m1 == m2 {
		ev.verify = ans(srvP, m1)
		ev.verify.from = srvAP
	}
	ev.ports = [][2]netip.AddrPort{{lan, m1}}
	return ev
}

func TestClassify(t *testing.T) {
	pub2 := netip.MustParseAddrPort("203.0.113.2:40001")
	pub3 := netip.MustParseAddrPort("203.0.113.2:40002")
	noNAT := rfcEvidence(lan, lan, lan, true, true)
	ignoredChange := rfcEvidence(pub, pub, pub, false, false)
	ignoredChange.filterIPPort.strays = []netip.AddrPort{srvP}
	refused := rfcEvidence(pub, pub, pub, false, false)
	refused.filterIPPort.errorCode = 420
	refused.filterPort.errorCode = 420
	dropped := rfcEvidence(pub, pub, pub, false, false)
	dropped.verify = silent(srvP)
	deadAlt := rfcEvidence(pub, pub, pub, false, false)
	deadAlt.mapping = []obs{silent(srvAP), silent(srvO)}
	strayAlt := rfcEvidence(pub, pub, pub, true, true)
	strayAlt.mapping[1] = silent(srvO)
	strayAlt.mapping[1].strays = []netip.AddrPort{srvP}
	plainVary := evidence{first: []obs{ans(srvP, pub), ans(netip.MustParseAddrPort("192.0.2.50:3478"), pub2)}}
	plainVary.first[0].other, plainVary.first[1].other = netip.AddrPort{}, netip.AddrPort{}
	plainVary.plan = makePlan(plainVary.first, false)
	plainSame := evidence{first: []obs{ans(srvP, pub), ans(netip.MustParseAddrPort("192.0.2.50:3478"), pub)}}
	plainSame.first[0].other, plainSame.first[1].other = netip.AddrPort{}, netip.AddrPort{}
	plainSame.plan = makePlan(plainSame.first, false)
	cgn := rfcEvidence(netip.MustParseAddrPort("100.64.3.4:5000"), netip.MustParseAddrPort("100.64.3.4:5000"), netip.MustParseAddrPort("100.64.3.4:5000"), false, false)

	tests := []struct {
		name      string
		ev        evidence
		nat       Answer
		mapping   Behavior
		filtering Behavior
		support   Support
		varies    Answer
		classic   string
	}{
		{"no answer", evidence{first: []obs{silent(srvP)}, plan: makePlan([]obs{silent(srvP)}, true)}, Unknown, BehaviorUnknown, BehaviorUnknown, SupportUnknown, Unknown, "unknown"},
		{"open", noNAT, No, EndpointIndependent, EndpointIndependent, Supported, No, "open"},
		{"full cone", rfcEvidence(pub, pub, pub, true, true), Yes, EndpointIndependent, EndpointIndependent, Supported, No, "full cone"},
		{"restricted cone", rfcEvidence(pub, pub, pub, false, true), Yes, EndpointIndependent, AddressDependent, Supported, No, "restricted cone"},
		{"port-restricted cone", rfcEvidence(pub, pub, pub, false, false), Yes, EndpointIndependent, AddressAndPortDependent, Supported, No, "port-restricted cone"},
		{"symmetric", rfcEvidence(pub, pub2, pub3, false, false), Yes, AddressAndPortDependent, AddressAndPortDependent, Supported, Yes, "symmetric"},
		{"address-dependent mapping", rfcEvidence(pub, pub2, pub2, false, false), Yes, AddressDependent, AddressAndPortDependent, Supported, Yes, "symmetric"},
		{"unnamed", rfcEvidence(pub, pub2, pub3, true, true), Yes, AddressAndPortDependent, EndpointIndependent, Supported, Yes, "unnamed"},
		{"change request ignored", ignoredChange, Yes, EndpointIndependent, BehaviorUnknown, Broken, No, "unknown"},
		{"change request refused", refused, Yes, EndpointIndependent, BehaviorUnknown, NotSupported, No, "unknown"},
		{"change request dropped", dropped, Yes, EndpointIndependent, BehaviorUnknown, Broken, No, "unknown"},
		{"alternate silent", deadAlt, Yes, BehaviorUnknown, BehaviorUnknown, Broken, Unknown, "unknown"},
		{"alternate answers from elsewhere", strayAlt, Yes, BehaviorUnknown, BehaviorUnknown, Broken, No, "unknown"},
		{"plain servers vary", plainVary, Yes, BehaviorUnknown, BehaviorUnknown, NotSupported, Yes, "unknown"},
		{"plain servers agree", plainSame, Yes, EndpointIndependent, BehaviorUnknown, NotSupported, No, "unknown"},
		{"cgn", cgn, Yes, EndpointIndependent, AddressAndPortDependent, Supported, No, "port-restricted cone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := classify(tt.ev)
			if v.behindNAT != tt.nat || v.mapping != tt.mapping || v.filtering != tt.filtering ||
				v.check.RFC5780 != tt.support || v.mappingVariesByServer != tt.varies {
				t.Errorf("got nat=%v mapping=%v filtering=%v support=%v varies=%v (problems %q)",
					v.behindNAT, v.mapping, v.filtering, v.check.RFC5780, v.mappingVariesByServer, v.check.Problems)
			}
			if got := Classic(v.behindNAT, v.mapping, v.filtering); got != tt.classic {
				t.Errorf("classic %q, want %q", got, tt.classic)
			}
		})
	}
	if v := classify(cgn); v.carrierGradeNAT != Yes {
		t.Errorf("100.64.0.0/10 public address: carrierGradeNAT %v", v.carrierGradeNAT)
	}
	for _, tt := range []struct {
		hops     []string
		cgn, dbl Answer
	}{
		{[]string{"192.168.1.1", "100.64.0.1", "203.0.113.1"}, Yes, Yes},
		{[]string{"192.168.1.1", "", "100.64.0.1"}, Yes, Yes},
		{[]string{"192.168.1.1", "203.0.113.1", "100.64.0.1"}, Unknown, Unknown}, // past the public edge
		{[]string{"192.168.1.1", "10.0.0.1", "203.0.113.1"}, Unknown, Unknown},
		{[]string{"", "", ""}, Unknown, Unknown},
	} {
		ev := rfcEvidence(pub, pub, pub, false, false)
		for _, h := range tt.hops {
			a, _ := netip.ParseAddr(h)
			ev.hops = append(ev.hops, a)
		}
		if v := classify(ev); v.carrierGradeNAT != tt.cgn || v.doubleNAT != tt.dbl {
			t.Errorf("hops %v: cgn %v double %v, want %v %v", tt.hops, v.carrierGradeNAT, v.doubleNAT, tt.cgn, tt.dbl)
		}
	}
}

func TestMappingBehavior(t *testing.T) {
	a := netip.MustParseAddrPort("203.0.113.2:1")
	b := netip.MustParseAddrPort("203.0.113.2:2")
	tests := []struct {
		name string
		dsts []obs
		want Behavior
	}{
		{"one destination", []obs{ans(srvP, a)}, BehaviorUnknown},
		{"same across IPs", []obs{ans(srvP, a), ans(srvAP, a)}, EndpointIndependent},
		{"same across ports only", []obs{ans(srvP, a), ans(srvPA, a)}, BehaviorUnknown},
		{"differs across ports", []obs{ans(srvP, a), ans(srvPA, b)}, AddressAndPortDependent},
		{"differs across IPs only", []obs{ans(srvP, a), ans(srvAP, b)}, BehaviorUnknown},
		{"address dependent", []obs{ans(srvP, a), ans(srvAP, b), ans(srvO, b)}, AddressDependent},
		{"inconsistent", []obs{ans(srvP, a), ans(srvAP, a), ans(srvO, b), ans(srvPA, a)}, AddressAndPortDependent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mappingBehavior(tt.dsts); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
