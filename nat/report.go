package nat

import (
	"fmt"
	"net/netip"
	"time"
)

// Report is what a probe found. It is plain data: every field's zero value
// means "not measured" (Unknown, BehaviorUnknown, an invalid address, 0).
type Report struct {
	// UDP reports whether any server answered over UDP.
	UDP bool `json:"udp"`
	// Public is the mapped address the first answering server saw.
	Public netip.AddrPort `json:"public"`
	// Local is the local address of the socket that learned Public (its IP is
	// the one the answer was delivered to, when the system tells).
	Local netip.AddrPort `json:"local"`
	// BehindNAT is No when the mapped address equals the local address.
	BehindNAT Answer `json:"behindNAT"`
	// Mapping and Filtering are the RFC 4787 behaviours. Filtering needs an
	// RFC 5780 server; with plain servers only it stays unknown.
	Mapping   Behavior `json:"mapping"`
	Filtering Behavior `json:"filtering"`
	// Hairpinning: a packet from a second socket to the first socket's
	// mapping came back inside. Unknown when switched off or not decidable.
	Hairpinning Answer `json:"hairpinning"`
	// PortPreserved: every mapping kept its local port number.
	PortPreserved Answer `json:"portPreserved"`
	// MappingVariesByServer: the mapping differed between destinations at
	// different IPs (several servers, or an RFC 5780 server's two
	// addresses); what plain STUN servers can show on their own.
	MappingVariesByServer Answer `json:"mappingVariesByServer"`
	// CarrierGradeNAT is Yes when the evidence shows a shared address
	// (100.64.0.0/10, RFC 6598) on the way out, as behind an ISP's CGN.
	CarrierGradeNAT Answer `json:"carrierGradeNAT"`
	// DoubleNAT is Yes when the mapped address itself is private or shared
	// address space, or a second translating hop was seen.
	DoubleNAT Answer `json:"doubleNAT"`
	// Classic is the derived RFC 3489 label (see Classic).
	Classic string `json:"classic"`

	// Loss is the fraction of transmissions the probe saw lost, measured on
	// the exchanges that were answered (a retransmission that was needed
	// counts one loss); LossSamples is the number of transmissions it rests
	// on. Silence only decides a verdict when, at this loss, losing every
	// repetition would be unlikely; see Confidence.
	Loss        float64 `json:"loss"`
	LossSamples int     `json:"lossSamples"`
	// Confidence says, per verdict, whether it is confirmed.
	Confidence Confidence `json:"confidence"`

	// PortRanges are the ranges the public ports of several fresh sockets'
	// mappings fell in (nearby ports merged), when the NAT did not keep the
	// local ports; RestrictedPorts is Yes when they stayed inside a narrow
	// set of ranges, as with MAP-E or a carrier-grade NAT's port blocks: only
	// those ports can ever be public, port preservation and forwarding any
	// other port (443) are impossible.
	PortRanges      []PortRange `json:"portRanges,omitempty"`
	RestrictedPorts Answer      `json:"restrictedPorts"`

	// PortMapping says whether a router port-mapping protocol (PCP, NAT-PMP,
	// UPnP IGD) can open a port on the public address: Yes when one mapped a
	// port with a public external address, No when none answered or the
	// external address was not public (a home router behind a CGN). Probe
	// does not test it; the caller sets it with SetPortMapping.
	PortMapping Answer `json:"portMapping"`
	// InboundIPv4 says whether inbound IPv4 connections (a forwarded port
	// 443) can work at all: No behind a carrier-grade or double NAT that no
	// port-mapping protocol opens, or when the public port set is
	// restricted; Yes without NAT, or behind one NAT whose public address is
	// this host's to forward. See InboundIPv4Reason.
	InboundIPv4 Answer `json:"inboundIPv4"`
	// InboundIPv4Reason says why, in words, when InboundIPv4 is known.
	InboundIPv4Reason string `json:"inboundIPv4Reason,omitempty"`

	// Server is the check of the server used for the RFC 5780 tests.
	Server ServerCheck `json:"server"`

	// MappingLifetime is the longest idle time a UDP mapping was seen to
	// survive; MappingExpired the shortest after which it was gone (0: it
	// never expired within Client.LifetimeMax). Both are zero unless
	// Client.Lifetime was set and the measurement worked.
	MappingLifetime time.Duration `json:"mappingLifetime,omitempty"`
	MappingExpired  time.Duration `json:"mappingExpired,omitempty"`
	// MappingLifetimeAtLeast is true when the mapping never expired within
	// Client.LifetimeMax: MappingLifetime is then a lower bound, not the
	// lifetime, and no "expires after" advice follows from it.
	MappingLifetimeAtLeast bool `json:"mappingLifetimeAtLeast,omitempty"`
	// SuggestedKeepalive is an interval that keeps UDP mappings alive with
	// margin: half the measured lifetime. Zero when not measured.
	SuggestedKeepalive time.Duration `json:"suggestedKeepalive,omitempty"`

	// TCP is the TCP mapping result, nil unless Client.TCP was set.
	TCP *TCPReport `json:"tcp,omitempty"`

	// Probes is the evidence: every request sent, in plan order.
	Probes []Evidence `json:"probes"`
	// Duration is how long the probe took.
	Duration time.Duration `json:"duration"`
}

// TCPReport is the TCP part of a Report.
type TCPReport struct {
	// Mapping is the TCP mapping behaviour, from several connections made
	// from one local port.
	Mapping Behavior `json:"mapping"`
	// Public is the first TCP mapped address.
	Public netip.AddrPort `json:"public"`
	// PortPreserved: the mapped port equals the local port.
	PortPreserved Answer     `json:"portPreserved"`
	Probes        []Evidence `json:"probes"`
}

// ServerCheck records whether the server proved it can run the RFC 5780 tests.
type ServerCheck struct {
	Addr         netip.AddrPort `json:"addr"`
	OtherAddress netip.AddrPort `json:"otherAddress"`
	RFC5780      Support        `json:"rfc5780"`
	// Problems says what failed, in words, when RFC5780 is Broken or NotSupported.
	Problems []string `json:"problems,omitempty"`
}

// Evidence is one test's record: what was sent, what came back.
type Evidence struct {
	// Test names the test.
	Test   TestKind       `json:"test"`
	Local  netip.AddrPort `json:"local"`
	Server netip.AddrPort `json:"server"`
	// ChangeIP and ChangePort are the CHANGE-REQUEST flags sent.
	ChangeIP   bool `json:"changeIP,omitempty"`
	ChangePort bool `json:"changePort,omitempty"`
	// Answered is true when an answer came from the expected source.
	Answered bool `json:"answered"`
	// Mapped is the XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) of the answer.
	Mapped netip.AddrPort `json:"mapped,omitzero"`
	// From is the source of the accepted answer; Origin its RESPONSE-ORIGIN;
	// Other its OTHER-ADDRESS.
	From   netip.AddrPort `json:"from,omitzero"`
	Origin netip.AddrPort `json:"origin,omitzero"`
	Other  netip.AddrPort `json:"other,omitzero"`
	// ErrorCode is the STUN error code of an error response.
	ErrorCode int `json:"errorCode,omitempty"`
	// Stray lists sources that answered with the right transaction ID but
	// were not the expected source; such answers are ignored.
	Stray []netip.AddrPort `json:"stray,omitempty"`
	// Sent is the number of transmissions; RTT the time from the first one
	// to the answer.
	Sent int           `json:"sent"`
	RTT  time.Duration `json:"rtt,omitempty"`
	// Note explains the outcome when it is not plain.
	Note string `json:"note,omitempty"`
}

// PortRange is an inclusive range of port numbers.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// Confidence says, for each verdict of a Report, whether it is confirmed.
type Confidence struct {
	UDP         Confirmation `json:"udp"`
	Mapping     Confirmation `json:"mapping"`
	Filtering   Confirmation `json:"filtering"`
	Hairpinning Confirmation `json:"hairpinning"`
}

// Confirmation is how firmly the evidence holds a verdict.
type Confirmation uint8

const (
	// ConfirmationUnknown: the verdict is unknown (nothing to confirm).
	ConfirmationUnknown Confirmation = iota
	// Confirmed: the verdict rests on answers, or on silence repeated from
	// fresh sockets, spaced, with a control exchange on the same path
	// answered, so often that at the measured loss all repetitions being
	// lost has a probability under 1 in 1000.
	Confirmed
	// Unconfirmed: the verdict rests on silence that was not repeated that
	// often (the hairpin test's few packets, or a Timeout too short for the
	// loss measured).
	Unconfirmed
)

var confirmationNames = [...]string{"unknown", "confirmed", "unconfirmed"}

// String returns "unknown", "confirmed" or "unconfirmed".
func (c Confirmation) String() string {
	if int(c) < len(confirmationNames) {
		return confirmationNames[c]
	}
	return fmt.Sprintf("Confirmation(%d)", uint8(c))
}

// MarshalText encodes c as its String.
func (c Confirmation) MarshalText() ([]byte, error) {
	if int(c) >= len(confirmationNames) {
		return nil, fmt.Errorf("nat: confirmation %d has no name", uint8(c))
	}
	return []byte(c.String()), nil
}

// UnmarshalText parses the String form.
func (c *Confirmation) UnmarshalText(text []byte) error {
	for i, n := range confirmationNames {
		if n == string(text) {
			*c = Confirmation(i)
			return nil
		}
	}
	return fmt.Errorf("nat: unknown confirmation %q", text)
}
