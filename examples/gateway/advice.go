package main

import (
	"fmt"
	"time"

	"github.com/hairpin-go/hairpin/nat"
)

// advice turns a NAT report into sentences for the operator: what the router
// does and what it means for this gateway. It is a pure function of the report.
func advice(r *nat.Report) []string {
	if r == nil {
		return nil
	}
	if !r.UDP {
		return []string{"no STUN server answered over UDP: UDP may be blocked; the TURN relay will need TCP or TLS listeners"}
	}
	var out []string
	out = append(out, fmt.Sprintf("public address %s (NAT: %s; mapping %s, filtering %s)",
		r.Public, classic(r), r.Mapping, r.Filtering))
	if r.BehindNAT == nat.No {
		out = append(out, "this host has a public address itself: no NAT in the way")
	}
	switch r.Hairpinning {
	case nat.No:
		out = append(out, "your router does not hairpin: LAN clients must use this DNS server (split horizon) to reach the public names")
	case nat.Yes:
		out = append(out, "your router hairpins: LAN clients can reach the public address, but split DNS still saves the detour through the router")
	}
	if r.Mapping == nat.AddressAndPortDependent {
		out = append(out, "the NAT maps address-and-port-dependently (symmetric): direct peer-to-peer calls will fail; the TURN relay is needed")
	}
	if r.CarrierGradeNAT == nat.Yes || r.DoubleNAT == nat.Yes {
		out = append(out, "there is a second NAT (carrier-grade or double NAT): port forwards on your router alone will not make services reachable from the internet")
	}
	if r.InboundIPv4 == nat.No {
		out = append(out, noInboundAdvice(r))
	}
	if r.MappingLifetime > 0 {
		out = append(out, lifetimeAdvice(r))
	}
	return out
}

// lifetimeAdvice says how long idle UDP mappings live and what keepalive
// interval that asks of clients.
func lifetimeAdvice(r *nat.Report) string {
	if r.MappingLifetimeAtLeast {
		// Never expired within the maximum: a lower bound, not a lifetime.
		return fmt.Sprintf("UDP mappings stayed open for the whole %s measured (they never expired): keep-alives every %s are enough",
			r.MappingLifetime.Round(time.Second), r.SuggestedKeepalive.Round(time.Second))
	}
	return fmt.Sprintf("UDP mappings expire after ~%s: keep-alives every %s keep them open",
		r.MappingLifetime.Round(time.Second), r.SuggestedKeepalive.Round(time.Second))
}

func classic(r *nat.Report) string {
	if r.Classic == "" {
		return "unknown"
	}
	return r.Classic
}

// noInboundAdvice says what to do on a line where no inbound IPv4 port can
// work (carrier-grade NAT, DS-Lite, MAP-E without the port): publish the
// names through an edge.
func noInboundAdvice(r *nat.Report) string {
	why := r.InboundIPv4Reason
	if why == "" {
		why = "no port can be forwarded to this host"
	}
	return "no inbound IPv4 is possible on this line (" + why + "): run the gateway with an edge: section on a host with a public address and add a tunnel: section here, so internet clients reach your names through the edge, and answer them with {edge} instead of {public} in the outside DNS view"
}
