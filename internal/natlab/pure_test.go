package natlab

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestKindStrings(t *testing.T) {
	want := map[Kind]string{KindUnknown: "Unknown", NoNAT: "NoNAT", OneToOne: "OneToOne",
		AddressRestricted: "AddressRestricted", PortRestricted: "PortRestricted", Symmetric: "Symmetric",
		UDPBlocked: "UDPBlocked", DoubleNAT: "DoubleNAT", PortSet: "PortSet", CarrierNAT: "CarrierNAT", CarrierNAT + 1: "Unknown"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), s)
		}
	}
	for b, s := range map[Behavior]string{BehaviorUnknown: "unknown", EndpointIndependent: "endpoint-independent",
		AddressDependent: "address-dependent", AddressAndPortDependent: "address-and-port-dependent"} {
		if b.String() != s {
			t.Errorf("Behavior(%d).String() = %q, want %q", b, b.String(), s)
		}
	}
	for h := LAN1; h <= SiteBCGN; h++ {
		if h.String() == "Unknown" || h.short() == "unknown" {
			t.Errorf("Host(%d) has no name", h)
		}
		// Namespace names must stay short enough for tools that print them.
		if n := len("hpl4194304-99999-" + h.short()); n > 32 {
			t.Errorf("namespace name for %v is %d bytes", h, n)
		}
	}
}

func TestGroundTruthTable(t *testing.T) {
	for _, tc := range []struct {
		k                  Kind
		mapping, filtering Behavior
		hairpinOn          bool
	}{
		{NoNAT, EndpointIndependent, EndpointIndependent, true},
		{OneToOne, EndpointIndependent, EndpointIndependent, true},
		{AddressRestricted, EndpointIndependent, AddressDependent, true},
		{PortRestricted, EndpointIndependent, AddressAndPortDependent, true},
		{Symmetric, AddressAndPortDependent, AddressAndPortDependent, true},
		{UDPBlocked, BehaviorUnknown, BehaviorUnknown, false},
		// IPv6 and TCP are checked below.
		{DoubleNAT, EndpointIndependent, AddressAndPortDependent, false},
	} {
		if tc.k.Mapping() != tc.mapping || tc.k.Filtering() != tc.filtering || tc.k.Hairpins(true) != tc.hairpinOn {
			t.Errorf("%v: %v/%v/%v, want %v/%v/%v", tc.k, tc.k.Mapping(), tc.k.Filtering(), tc.k.Hairpins(true), tc.mapping, tc.filtering, tc.hairpinOn)
		}
		if v6 := tc.k.IPv6Filtering(); (tc.k == NoNAT) != (v6 == EndpointIndependent) || (tc.k == UDPBlocked) != (v6 == BehaviorUnknown) {
			t.Errorf("%v: IPv6 filtering %v", tc.k, v6)
		}
		if tc.k.TCPMapping() != tc.mapping && tc.k != UDPBlocked || UDPBlocked.TCPMapping() != EndpointIndependent {
			t.Errorf("%v: TCP mapping %v", tc.k, tc.k.TCPMapping())
		}
		if tc.k != NoNAT && tc.k.Hairpins(false) {
			t.Errorf("%v hairpins with hairpinning off", tc.k)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		err  string
	}{
		{"zero", Config{}, ""},
		{"forward", Config{Forwards: []Forward{{Proto: "tcp", Port: 443, To: LAN1, ToPort: 8443}}}, ""},
		{"bad kind", Config{Kind: CarrierNAT + 1}, "unknown kind"},
		{"bad site B", Config{SiteB: 200}, "unknown site B kind"},
		{"short timeout", Config{UDPTimeout: time.Millisecond}, "at least 1s"},
		{"proto", Config{Forwards: []Forward{{Proto: "sctp", Port: 1, To: LAN1}}}, `proto "sctp"`},
		{"port 0", Config{Forwards: []Forward{{Proto: "udp", To: LAN2}}}, "port 0"},
		{"to server", Config{Forwards: []Forward{{Proto: "udp", Port: 1, To: Server}}}, "to Server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.validate()
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one containing %q", err, tc.err)
			case err != nil && !strings.HasPrefix(err.Error(), "natlab: "):
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestCreator(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pid   int
		start uint64
		ok    bool
	}{
		{"hpl4242-2n9c-3-lan1", 4242, 123456, true},
		{"hpl4242-3-lan1", 4242, 0, true},
		{"hpl1-0-12-rtr", 1, 0, true},
		{"hpl4242-lan1", 0, 0, false},
		{"hplx-1-lan1", 0, 0, false},
		{"other4242-1-lan1", 0, 0, false},
		{"hpl0-1-lan1", 0, 0, false},
		{"hpl-1-1-lan1", 0, 0, false},
		{"hpl4242-2n9c-3-", 0, 0, false},
		{"hpl4242-2n9c-x-lan1", 0, 0, false},
		{"hpl04242-3-lan1", 0, 0, false},
	} {
		pid, start, ok := creator(tc.name)
		if pid != tc.pid || start != tc.start || ok != tc.ok {
			t.Errorf("creator(%q) = %d, %d, %v; want %d, %d, %v", tc.name, pid, start, ok, tc.pid, tc.start, tc.ok)
		}
	}
}

func TestProcStart(t *testing.T) {
	start, running := procStart(os.Getpid())
	if !running || start == 0 {
		t.Fatalf("procStart(self) = %d, %v", start, running)
	}
	pid, s, ok := creator(labPrefix() + "1-lan1")
	if !ok || pid != os.Getpid() || s != start {
		t.Errorf("creator(labPrefix()...) = %d, %d, %v; want %d, %d", pid, s, ok, os.Getpid(), start)
	}
	if stale(labPrefix() + "1-lan1") {
		t.Error("this process's own lab is stale")
	}
}

// TestRuleset checks the rules that make each behaviour, without root.
func TestRuleset(t *testing.T) {
	wan := netip.MustParseAddr("203.0.113.2")
	lan1 := netip.MustParseAddr("192.168.1.10")
	for _, tc := range []struct {
		name    string
		l       layer
		want    []string
		notWant []string
	}{
		{"port restricted", layer{kind: PortRestricted, wan: wan, timeout: 30 * time.Second},
			[]string{`oifname "wan" masquerade`, `iifname "wan" drop`},
			[]string{"fully-random", "udpowner", "snat", "dnat"}},
		{"symmetric", layer{kind: Symmetric, wan: wan, timeout: time.Minute},
			[]string{`oifname "wan" masquerade fully-random`}, []string{"udpowner"}},
		{"address restricted", layer{kind: AddressRestricted, wan: wan, timeout: 20 * time.Second},
			[]string{"timeout 20s", "udp dport . ip saddr @udpseen dnat ip to udp dport map @udpowner",
				"update @udpseen { udp sport . ip daddr }",
				"update @udpowner { udp sport : ct original ip saddr . ct original proto-src }"},
			[]string{`iifname "lan" ip daddr`}},
		{"one to one", layer{kind: OneToOne, wan: wan, oneToOne: lan1, timeout: time.Minute},
			[]string{`iifname "wan" ip daddr 203.0.113.2 dnat ip to 192.168.1.10`, `oifname "wan" ip saddr 192.168.1.10 snat ip to 203.0.113.2`},
			[]string{"ct status dnat"}},
		{"one to one hairpin", layer{kind: OneToOne, wan: wan, oneToOne: lan1, hairpin: true, timeout: time.Minute},
			[]string{"\t\tip daddr 203.0.113.2 dnat ip to 192.168.1.10", `iifname "lan" oifname "lan" ct status dnat snat ip to 203.0.113.2`},
			nil},
		{"hairpin", layer{kind: PortRestricted, wan: wan, hairpin: true, timeout: time.Minute},
			[]string{`iifname "lan" ip daddr 203.0.113.2 meta l4proto udp dnat ip to udp dport map @udpowner`,
				`iifname "lan" oifname "lan" ct status dnat snat ip to 203.0.113.2`},
			[]string{"udpseen"}},
		{"forward", layer{kind: PortRestricted, wan: wan, timeout: time.Minute, forwards: []forward{{"tcp", 443, lan1, 8443}}},
			[]string{`iifname "wan" ip daddr 203.0.113.2 tcp dport 443 dnat ip to 192.168.1.10:8443`}, nil},
		{"forward hairpin", layer{kind: PortRestricted, wan: wan, hairpin: true, timeout: time.Minute, forwards: []forward{{"udp", 53, lan1, 53}}},
			[]string{"\t\tip daddr 203.0.113.2 udp dport 53 dnat ip to 192.168.1.10:53"}, nil},
		{"udp blocked", layer{kind: UDPBlocked, wan: wan, timeout: time.Minute},
			[]string{"meta l4proto udp drop", `oifname "wan" masquerade`}, nil},
		{"loss", layer{kind: PortRestricted, wan: wan, timeout: time.Minute, loss: 20},
			[]string{`oifname "wan" meta l4proto udp numgen random mod 100 < 20 drop`,
				`iifname "wan" meta l4proto udp numgen random mod 100 < 20 drop`}, nil},
		{"port set", layer{kind: PortRestricted, wan: wan, timeout: time.Minute, ports: PortSetRange},
			[]string{`oifname "wan" meta l4proto { tcp, udp } masquerade to :40960-41215`}, []string{"numgen"}},
		{"no nat", layer{kind: NoNAT, wan: wan, timeout: time.Minute},
			nil, []string{"masquerade", "drop", "snat", "ip6"}},
		{"ipv6 firewall", layer{kind: PortRestricted, wan: wan, timeout: time.Minute, v6: true,
			forwards6: []forward{{"tcp", 8443, netip.MustParseAddr("2001:db8:a1::10"), 8443}}},
			[]string{"table ip6 natlab6", "ct state established,related accept", "meta l4proto ipv6-icmp accept",
				`iifname "wan" ip6 daddr 2001:db8:a1::10 tcp dport 8443 accept`},
			[]string{"meta l4proto udp drop"}},
		{"ipv6 no nat", layer{kind: NoNAT, wan: wan, timeout: time.Minute, v6: true},
			[]string{"table ip6 natlab6"}, []string{"drop"}},
		{"ipv6 udp blocked", layer{kind: UDPBlocked, wan: wan, timeout: time.Minute, v6: true},
			[]string{"table ip6 natlab6 {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tmeta l4proto udp drop"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := tc.l.ruleset()
			for _, w := range tc.want {
				if !strings.Contains(rs, w) {
					t.Errorf("ruleset lacks %q:\n%s", w, rs)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(rs, w) {
					t.Errorf("ruleset has %q:\n%s", w, rs)
				}
			}
		})
	}
}
