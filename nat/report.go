package nat

import (
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

	// Server is the check of the server used for the RFC 5780 tests.
	Server ServerCheck `json:"server"`

	// MappingLifetime is the longest idle time a UDP mapping was seen to
	// survive; MappingExpired the shortest after which it was gone (0: it
	// never expired within Client.LifetimeMax). Both are zero unless
	// Client.Lifetime was set and the measurement worked.
	MappingLifetime time.Duration `json:"mappingLifetime,omitempty"`
	MappingExpired  time.Duration `json:"mappingExpired,omitempty"`
	// SuggestedKeepalive is an interval that keeps UDP mappings alive with
	// margin: half the measured lifetime. Zero when not measured.
	SuggestedKeepalive time.Duration `json:"suggestedKeepalive,omitempty"`

	// TCP is the TCP mapping result, nil unless Client.TCP was set.
	TCP *TCPReport `json:"tcp,omitempty"`

	// Probes is the evidence: every request sent, in plan order.
	Probes []Probe `json:"probes"`
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
	PortPreserved Answer  `json:"portPreserved"`
	Probes        []Probe `json:"probes"`
}

// ServerCheck records whether the server proved it can run the RFC 5780 tests.
type ServerCheck struct {
	Addr         netip.AddrPort `json:"addr"`
	OtherAddress netip.AddrPort `json:"otherAddress"`
	RFC5780      Support        `json:"rfc5780"`
	// Problems says what failed, in words, when RFC5780 is Broken or NotSupported.
	Problems []string `json:"problems,omitempty"`
}

// Probe is one test's evidence.
type Probe struct {
	// Test names the test: "resolve" (a server name that did not resolve),
	// "binding", "mapping-alt-ip", "mapping-alt-ip-port", "verify-change-ip",
	// "filtering-change-ip-port", "filtering-change-port", "hairpin-binding",
	// "hairpin", "path" (TTL-limited, for the carrier-grade NAT hint),
	// "lifetime", "tcp".
	Test   string         `json:"test"`
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
