package nat

import (
	"fmt"
	"net/netip"
	"time"
)

// obs is what one transaction showed, stripped to what decisions need.
type obs struct {
	ran       bool
	answered  bool
	local     netip.AddrPort
	server    netip.AddrPort
	mapped    netip.AddrPort
	from      netip.AddrPort
	origin    netip.AddrPort
	other     netip.AddrPort
	errorCode int
	strays    []netip.AddrPort
	rtt       time.Duration
	// sent is the number of transmissions; cut is true when the probe's
	// deadline ended the exchange early.
	sent int
	cut  bool
	// weak is true when the exchange went unanswered but too few tries
	// were made for its silence to count (see triesNeeded): it decides
	// nothing.
	weak bool
}

// plan is the second phase of a probe, decided from the first phase's
// bindings (socket A to every server).
type plan struct {
	// rfc is the index of the server used for the RFC 5780 tests, -1 if none.
	rfc int
	// primary and other are that server's address and OTHER-ADDRESS.
	primary, other netip.AddrPort
	// mapping lists the destinations socket A binds to next: the alternate
	// IP with the primary port, then the OTHER-ADDRESS.
	mapping []netip.AddrPort
	// filtering says whether the CHANGE-REQUEST tests run.
	filtering bool
	// hairpin is the index of the server the hairpin test learns mappings
	// from, -1 if the test does not run.
	hairpin int
	// check is the server check so far (for the chosen server, else the
	// first that answered).
	check ServerCheck
}

// makePlan is a pure function: from socket A's first bindings (one per
// server, in Client.Servers order) it picks the RFC 5780 server and the tests.
func makePlan(first []obs, hairpin bool) plan {
	p := plan{rfc: -1, hairpin: -1}
	firstAnswered := -1
	var checks []ServerCheck
	for i, o := range first {
		if !o.answered {
			continue
		}
		if firstAnswered < 0 {
			firstAnswered = i
		}
		c := ServerCheck{Addr: o.server, OtherAddress: o.other}
		switch {
		case !o.other.IsValid():
			c.RFC5780 = NotSupported
			c.Problems = append(c.Problems, "no OTHER-ADDRESS: a plain STUN server")
		default:
			if problem := otherAddressProblem(o.server, o.other); problem != "" {
				c.RFC5780 = Broken
				c.Problems = append(c.Problems, problem)
			}
		}
		checks = append(checks, c)
		if c.RFC5780 == SupportUnknown && p.rfc < 0 {
			p.rfc = i
			p.primary, p.other = o.server, o.other
			p.check = c
		}
	}
	if firstAnswered < 0 {
		if len(first) > 0 {
			p.check = ServerCheck{Addr: first[0].server}
		}
		return p
	}
	if hairpin {
		p.hairpin = firstAnswered
	}
	if p.rfc < 0 {
		p.check = checks[0]
		return p
	}
	p.mapping = []netip.AddrPort{
		netip.AddrPortFrom(p.other.Addr(), p.primary.Port()),
		p.other,
	}
	p.filtering = true
	return p
}

// otherAddressProblem explains why an OTHER-ADDRESS cannot serve the RFC 5780
// tests, or returns "".
func otherAddressProblem(primary, other netip.AddrPort) string {
	a := other.Addr()
	switch {
	case a.Is4() != primary.Addr().Is4():
		return fmt.Sprintf("OTHER-ADDRESS %v is not in the family of %v", other, primary)
	case a.IsUnspecified() || a.IsMulticast() || other.Port() == 0:
		return fmt.Sprintf("OTHER-ADDRESS %v is not a usable address", other)
	case a.IsLoopback() != primary.Addr().IsLoopback():
		return fmt.Sprintf("OTHER-ADDRESS %v is loopback and %v is not (or the reverse)", other, primary)
	case a == primary.Addr() || other.Port() == primary.Port():
		return fmt.Sprintf("OTHER-ADDRESS %v does not differ from %v in both IP and port", other, primary)
	}
	return ""
}
