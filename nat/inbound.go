package nat

import (
	"fmt"
	"strings"
)

// SetPortMapping records whether a router port-mapping protocol can open a
// public port (see Report.PortMapping) and decides InboundIPv4 again with
// it. Callers that probe PCP, NAT-PMP or UPnP IGD call it after Probe.
func (r *Report) SetPortMapping(a Answer) {
	r.PortMapping = a
	r.InboundIPv4, r.InboundIPv4Reason = inbound(r)
}

// The advice of every "no inbound" verdict.
const noInboundAdvice = "forwarding a port such as 443 cannot work here; use IPv6 for direct access, or publish through an edge with a public address (a tunnel from here, see proxy)"

// inbound is a pure function of the report: can inbound IPv4 connections
// reach this host at all, and why.
func inbound(r *Report) (Answer, string) {
	if !r.UDP && (r.TCP == nil || !r.TCP.Public.IsValid()) {
		return Unknown, ""
	}
	if r.BehindNAT == No {
		return Yes, "this host has a public address: no NAT in the way"
	}
	if r.RestrictedPorts == Yes {
		has443 := false
		var rs []string
		for _, p := range r.PortRanges {
			has443 = has443 || (p.First <= 443 && 443 <= p.Last)
			rs = append(rs, fmt.Sprintf("%d-%d", p.First, p.Last))
		}
		if !has443 {
			return No, fmt.Sprintf("the public address is shared: only ports %s are this line's (MAP-E or a carrier-grade NAT's port block); %s",
				strings.Join(rs, ", "), noInboundAdvice)
		}
	}
	if r.CarrierGradeNAT == Yes || r.DoubleNAT == Yes {
		switch r.PortMapping {
		case Yes:
			return Yes, "behind a second NAT, but a port-mapping protocol maps public ports"
		case No:
			return No, "behind a carrier-grade or double NAT that no port-mapping protocol (PCP, NAT-PMP, UPnP IGD) opens; " + noInboundAdvice
		}
		return Unknown, "behind a carrier-grade or double NAT: inbound works only if a port-mapping protocol there opens it (not probed)"
	}
	if r.BehindNAT == Yes {
		return Yes, "one NAT whose public address is this line's: forward the ports on the router, or map them (PCP, NAT-PMP, UPnP IGD)"
	}
	return Unknown, ""
}
