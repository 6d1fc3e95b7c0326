package nat

import (
	"fmt"
	"net/netip"
	"slices"
)

// evidence is everything classification looks at.
type evidence struct {
	plan plan
	// first are socket A's bindings to each server; mapping its bindings to
	// plan.mapping, in order.
	first   []obs
	mapping []obs
	// filterIPPort and filterPort are the CHANGE-REQUEST tests, each from a
	// fresh socket to plan.primary.
	filterIPPort, filterPort obs
	// verify is CHANGE-REQUEST (IP) from socket A, which must be answered
	// from the alternate IP when A's mapping is endpoint-independent.
	verify obs
	// hairpin: ran, and answered when socket A received the second socket's
	// packet sent to A's mapping.
	hairpin obs
	// ports are (local, mapped) pairs of every socket that got a mapping.
	ports [][2]netip.AddrPort
	// hops are the routers 1, 2, 3 … hops away (invalid where none told).
	hops []netip.Addr
	// rangePorts are the bindings of the extra fresh sockets that show the
	// NAT's public port set.
	rangePorts []obs
	// udpConfirmed: nothing answered, and two sockets ran their whole
	// schedule.
	udpConfirmed bool
	// loss and lossSamples are the loss measured (engine.loss).
	loss        float64
	lossSamples int
}

// verdict is the classification of evidence.
type verdict struct {
	udp                   bool
	public, local         netip.AddrPort
	behindNAT             Answer
	mapping, filtering    Behavior
	hairpinning           Answer
	portPreserved         Answer
	mappingVariesByServer Answer
	carrierGradeNAT       Answer
	doubleNAT             Answer
	check                 ServerCheck
	confidence            Confidence
	portRanges            []PortRange
	restrictedPorts       Answer
}

var (
	sharedSpace = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598
)

// classify is a pure function from evidence to verdict. It only concludes
// what the evidence shows; everything else stays unknown.
func classify(ev evidence) verdict {
	var v verdict
	v.check = ev.plan.check
	v.check.Problems = slices.Clone(v.check.Problems)
	// The public address comes from the first server that answered.
	var a obs
	for _, o := range ev.first {
		if o.answered {
			a = o
			break
		}
	}
	if !a.answered {
		v.confidence.UDP = Unconfirmed
		if ev.udpConfirmed {
			v.confidence.UDP = Confirmed
		}
		return v
	}
	v.udp = true
	v.confidence.UDP = Confirmed
	v.public, v.local = a.mapped, a.local
	if a.local.IsValid() && !a.local.Addr().IsUnspecified() {
		v.behindNAT = answerOf(a.mapped != a.local)
	}
	pub := a.mapped.Addr()
	switch {
	case sharedSpace.Contains(pub):
		v.carrierGradeNAT, v.doubleNAT = Yes, Yes
	case pub.IsPrivate() && v.behindNAT == Yes && !pub.IsLoopback():
		// The server sees a private source although we were translated: a
		// second NAT lies between the server and us, or the server is inside.
		v.doubleNAT = Yes
	}

	// Routers on the way out with shared addresses (RFC 6598) are a
	// carrier-grade NAT; behind our own NAT that makes two.
	for _, h := range ev.hops {
		if !h.IsValid() {
			continue
		}
		if sharedSpace.Contains(h) {
			v.carrierGradeNAT = Yes
			if v.behindNAT == Yes {
				v.doubleNAT = Yes
			}
			break
		}
		if !h.IsPrivate() {
			break // out in public address space
		}
	}

	// Mapping: socket A's mapped address for every destination it reached.
	var dsts []obs
	for _, o := range ev.first {
		if o.answered {
			dsts = append(dsts, o)
		}
	}
	for _, o := range ev.mapping {
		if o.answered {
			dsts = append(dsts, o)
		}
	}
	v.mapping = mappingBehavior(dsts)
	if v.behindNAT == No && v.mapping == BehaviorUnknown && len(dsts) > 0 {
		// Without translation there is nothing to depend on the destination.
		same := true
		for _, o := range dsts {
			same = same && o.mapped == a.mapped
		}
		if same {
			v.mapping = EndpointIndependent
		}
	}
	v.mappingVariesByServer = variesByServer(append(slices.Clone(ev.first), ev.mapping...))

	// Server verification from the phase-two tests.
	rfcOK := false
	// undecided: a test whose silence would have condemned the server went
	// unanswered, but too few times to count (a lossy path).
	undecided := false
	if ev.plan.rfc >= 0 {
		rfcOK = true
		for i, o := range ev.mapping {
			if !o.answered && o.weak && len(o.strays) == 0 {
				rfcOK = false
				undecided = true
				continue
			}
			if !o.answered {
				rfcOK = false
				msg := fmt.Sprintf("alternate address %v did not answer", ev.plan.mapping[i])
				if len(o.strays) > 0 {
					msg += fmt.Sprintf(" (answers came from %v instead)", o.strays)
				}
				v.check.Problems = append(v.check.Problems, msg)
			}
		}
	}
	filterOK := true
	for _, f := range []struct {
		o    obs
		want netip.AddrPort
		test TestKind
		name string
	}{
		{ev.filterIPPort, ev.plan.other, FilteringChangeIPPortTest, "change IP and port"},
		{ev.filterPort, netip.AddrPortFrom(ev.plan.primary.Addr(), ev.plan.other.Port()), FilteringChangePortTest, "change port"},
		{ev.verify, netip.AddrPortFrom(ev.plan.other.Addr(), ev.plan.primary.Port()), VerifyChangeIPTest, "change IP, on a path known open"},
	} {
		if !f.o.ran {
			continue
		}
		switch {
		case f.o.errorCode != 0:
			filterOK = false
			v.check.Problems = append(v.check.Problems, fmt.Sprintf("CHANGE-REQUEST (%s) refused with error %d", f.name, f.o.errorCode))
		case !f.o.answered && len(f.o.strays) > 0:
			filterOK = false
			v.check.Problems = append(v.check.Problems, fmt.Sprintf("CHANGE-REQUEST (%s) answered from %v, not from %v", f.name, f.o.strays, f.want))
		case !f.o.answered && f.test == VerifyChangeIPTest && f.o.weak:
			undecided = true
		case !f.o.answered && f.test == VerifyChangeIPTest:
			// The path was open: silence means the server dropped it.
			filterOK = false
			v.check.Problems = append(v.check.Problems, fmt.Sprintf("CHANGE-REQUEST (%s) was not answered from %v", f.name, f.want))
		case f.o.answered && f.o.origin.IsValid() && f.o.origin != f.o.from:
			v.check.Problems = append(v.check.Problems, fmt.Sprintf("RESPONSE-ORIGIN %v differs from the packet source %v", f.o.origin, f.o.from))
		}
	}
	switch {
	case ev.plan.rfc < 0:
	case undecided && len(v.check.Problems) == 0:
		// Unknown: not enough evidence either way.
	case !rfcOK:
		v.check.RFC5780 = Broken
	case !filterOK:
		if v.check.RFC5780 == SupportUnknown {
			v.check.RFC5780 = Broken
			if ev.filterIPPort.errorCode != 0 || ev.filterPort.errorCode != 0 {
				v.check.RFC5780 = NotSupported
			}
		}
	default:
		v.check.RFC5780 = Supported
	}
	if ev.plan.rfc >= 0 && !rfcOK {
		// Mapping results that needed the alternate address are void, unless
		// they came from comparing servers.
		v.mapping = mappingBehavior(answeredOnly(ev.first))
	}
	if ev.plan.rfc >= 0 && !rfcOK && undecided {
		v.mapping = mappingBehavior(answeredOnly(ev.first))
	}
	// Filtering: an answer is proof; silence counts only when confirmed
	// (controls answered, enough spaced tries from fresh sockets).
	if v.check.RFC5780 == Supported && ev.filterIPPort.ran && ev.filterPort.ran {
		ipPort, port := ev.filterIPPort, ev.filterPort
		switch {
		case ipPort.answered:
			v.filtering = EndpointIndependent
		case ipPort.weak:
		case port.answered:
			v.filtering = AddressDependent
		case port.weak:
		default:
			v.filtering = AddressAndPortDependent
		}
	}
	if v.mapping != BehaviorUnknown {
		v.confidence.Mapping = Confirmed // compared answers only
	}
	if v.filtering != BehaviorUnknown {
		v.confidence.Filtering = Confirmed
	}

	// Hairpinning needs the packet to be sent to a known mapping.
	if ev.hairpin.ran {
		v.hairpinning = answerOf(ev.hairpin.answered)
		v.confidence.Hairpinning = Confirmed
		if !ev.hairpin.answered && ev.hairpin.weak {
			v.confidence.Hairpinning = Unconfirmed
		}
	}

	if len(ev.ports) > 0 {
		kept := true
		for _, p := range ev.ports {
			kept = kept && p[0].Port() == p[1].Port()
		}
		v.portPreserved = answerOf(kept)
	}
	if v.behindNAT == Yes {
		v.portRanges, v.restrictedPorts = portSet(ev.ports)
	}
	return v
}

// Port set detection, and why these numbers.
const (
	// minPortSamples: fewer mappings than this decide nothing.
	minPortSamples = 6
	// portGap merges ports closer than this into one range: MAP-E port
	// sets and CGN port blocks are runs of 16 to a few thousand ports.
	portGap = 1024
	// maxRestrictedRanges and maxRestrictedSpan: a restricted port set
	// shows as at most this many runs, together this wide at most. A NAT
	// that picks from its whole range (fully-random masquerade) or keeps
	// the local ports (spread over the ephemeral range) scatters a dozen
	// mappings far wider.
	maxRestrictedRanges = 4
	maxRestrictedSpan   = 4096
)

// portSet is a pure function from (local, mapped) pairs to the public port
// ranges they fell in and whether those look restricted: Yes when at most a
// quarter of the mappings kept their local port (a local port that happens
// to lie inside the line's range is kept by the NAT) and the public ports
// huddle in a few narrow runs; No when ports were kept (the NAT may use any port) or spread wide;
// Unknown with too few samples. Ranges are only reported when no port was
// kept.
func portSet(pairs [][2]netip.AddrPort) ([]PortRange, Answer) {
	if len(pairs) < minPortSamples {
		return nil, Unknown
	}
	ports := make([]int, 0, len(pairs))
	kept := 0
	for _, p := range pairs {
		if p[0].Port() == p[1].Port() {
			kept++
		}
		ports = append(ports, int(p[1].Port()))
	}
	if kept*2 > len(pairs) {
		return nil, No // mostly preserved: not a restricted set
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	var rs []PortRange
	span := 0
	for i, p := range ports {
		if i == 0 || p-int(rs[len(rs)-1].Last) >= portGap {
			rs = append(rs, PortRange{First: uint16(p), Last: uint16(p)})
			continue
		}
		rs[len(rs)-1].Last = uint16(p)
	}
	for _, r := range rs {
		span += int(r.Last-r.First) + 1
	}
	if kept*4 <= len(pairs) && len(rs) <= maxRestrictedRanges && span <= maxRestrictedSpan {
		return rs, Yes
	}
	return rs, No
}

func answeredOnly(os []obs) []obs {
	var out []obs
	for _, o := range os {
		if o.answered {
			out = append(out, o)
		}
	}
	return out
}

// mappingBehavior compares one socket's mapped addresses across
// destinations. Same mapping for two different destination IPs means
// endpoint-independent; a different mapping for two ports of one IP means
// address-and-port-dependent; a mapping that varies with the IP but not with
// the port of one IP means address-dependent. Anything less is unknown.
func mappingBehavior(dsts []obs) Behavior {
	var (
		sameIPDiffer, sameIPSame bool // pairs with one IP and two ports
		diffIPDiffer, diffIPSame bool // pairs with two IPs
	)
	for i := range dsts {
		for j := i + 1; j < len(dsts); j++ {
			a, b := dsts[i], dsts[j]
			if a.server == b.server {
				continue
			}
			same := a.mapped == b.mapped
			if a.server.Addr() == b.server.Addr() {
				sameIPDiffer = sameIPDiffer || !same
				sameIPSame = sameIPSame || same
			} else {
				diffIPDiffer = diffIPDiffer || !same
				diffIPSame = diffIPSame || same
			}
		}
	}
	switch {
	case sameIPDiffer:
		return AddressAndPortDependent
	case diffIPDiffer && sameIPSame:
		return AddressDependent
	case diffIPSame && !diffIPDiffer:
		return EndpointIndependent
	}
	return BehaviorUnknown
}

// variesByServer compares the mappings servers at different IPs reported.
func variesByServer(first []obs) Answer {
	var ans Answer
	for i := range first {
		for j := i + 1; j < len(first); j++ {
			a, b := first[i], first[j]
			if !a.answered || !b.answered || a.server.Addr() == b.server.Addr() {
				continue
			}
			if a.mapped != b.mapped {
				return Yes
			}
			ans = No
		}
	}
	return ans
}
