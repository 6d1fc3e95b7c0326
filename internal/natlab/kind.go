package natlab

// Kind is the NAT behaviour a lab router has. Each kind states its RFC 4787
// ground truth through Mapping and Filtering, so tests can assert what a
// discovery tool reports against what the kernel really does.
type Kind uint8

// The kinds of NAT the lab builds. The zero value, KindUnknown, means "no
// site" where a kind is optional (Config.SiteB).
const (
	// KindUnknown is the zero value: not configured.
	KindUnknown Kind = iota
	// NoNAT: the LAN hosts have public addresses; the router only routes and
	// filters nothing.
	NoNAT
	// OneToOne: LAN1 is statically mapped to the router's public address
	// (snat and dnat of every port): endpoint-independent mapping and
	// endpoint-independent filtering. LAN2 is masqueraded.
	OneToOne
	// AddressRestricted: endpoint-independent mapping (masquerade keeps the
	// source port) and address-dependent filtering, built from nft sets that
	// remember, per mapped port, the remote addresses it sent to.
	AddressRestricted
	// PortRestricted: plain conntrack masquerade: endpoint-independent mapping
	// and address-and-port-dependent filtering.
	PortRestricted
	// Symmetric: masquerade fully-random: address-and-port-dependent mapping
	// and filtering.
	Symmetric
	// UDPBlocked: the router forwards no UDP at all (TCP is masqueraded).
	UDPBlocked
	// DoubleNAT: a port-restricted home NAT behind a port-restricted
	// carrier-grade NAT, linked by 100.64.0.0/10 addresses.
	DoubleNAT
	// PortSet: a MAP-E-like line, where the home router may only use a small
	// set of public ports (PortSetRange: 40960-41215; 443 is not among
	// them): masquerade restricted to that range. Filtering is conntrack's
	// (address-and-port-dependent). Masquerade takes the first free port of
	// the range per destination, so one socket keeps its port across
	// destinations as long as no other socket took it first: the mapping
	// is endpoint-independent in a probe, but not guaranteed, and local
	// ports are never preserved.
	PortSet
	// CarrierNAT: like DoubleNAT, but the carrier-grade NAT gives the
	// subscriber a block of ports only (CarrierPortBlock, 20480-20991), as
	// CGNs with port-block allocation do. Nothing the home router can be
	// asked (UPnP, NAT-PMP) opens the outer NAT.
	CarrierNAT
)

// Port ranges of the PortSet and CarrierNAT kinds.
var (
	PortSetRange     = [2]uint16{40960, 41215}
	CarrierPortBlock = [2]uint16{20480, 20991}
)

// Kinds returns the kinds with a fixed RFC 4787 ground truth, in declaration
// order; LineKinds the ones built for line-level detection (restricted port
// sets, carrier-grade NAT).
func Kinds() []Kind {
	return []Kind{NoNAT, OneToOne, AddressRestricted, PortRestricted, Symmetric, UDPBlocked, DoubleNAT}
}

// LineKinds returns PortSet and CarrierNAT.
func LineKinds() []Kind { return []Kind{PortSet, CarrierNAT} }

// PortRange returns the public port range the kind's outermost NAT is
// restricted to, and false when it may use any port.
func (k Kind) PortRange() ([2]uint16, bool) {
	switch k {
	case PortSet:
		return PortSetRange, true
	case CarrierNAT:
		return CarrierPortBlock, true
	}
	return [2]uint16{}, false
}

// BehindCGN reports whether the kind puts site A behind a carrier-grade NAT
// (100.64.0.0/10 between the home router and the CGN).
func (k Kind) BehindCGN() bool { return k == DoubleNAT || k == CarrierNAT }

// String returns the kind's name as it is spelled in Go, e.g. "PortRestricted".
func (k Kind) String() string {
	switch k {
	case NoNAT:
		return "NoNAT"
	case OneToOne:
		return "OneToOne"
	case AddressRestricted:
		return "AddressRestricted"
	case PortRestricted:
		return "PortRestricted"
	case Symmetric:
		return "Symmetric"
	case UDPBlocked:
		return "UDPBlocked"
	case DoubleNAT:
		return "DoubleNAT"
	case PortSet:
		return "PortSet"
	case CarrierNAT:
		return "CarrierNAT"
	default:
		return "Unknown"
	}
}

// Behavior is an RFC 4787 mapping or filtering behaviour.
type Behavior uint8

// RFC 4787 behaviours.
const (
	// BehaviorUnknown is the zero value: not applicable (UDP blocked) or not known.
	BehaviorUnknown Behavior = iota
	// EndpointIndependent: one mapping for all destinations (mapping), or
	// anyone may send to it (filtering).
	EndpointIndependent
	// AddressDependent: a mapping per destination address, or only
	// addresses the mapping has sent to may send to it.
	AddressDependent
	// AddressAndPortDependent: a mapping per destination address and port,
	// or only the exact addresses and ports it has sent to may send to it.
	AddressAndPortDependent
)

// String returns the RFC 4787 term, e.g. "endpoint-independent".
func (b Behavior) String() string {
	switch b {
	case EndpointIndependent:
		return "endpoint-independent"
	case AddressDependent:
		return "address-dependent"
	case AddressAndPortDependent:
		return "address-and-port-dependent"
	default:
		return "unknown"
	}
}

// Mapping returns the UDP mapping behaviour of the kind, as seen from LAN1
// (BehaviorUnknown for UDPBlocked and KindUnknown). NoNAT reports
// EndpointIndependent: the "mapping" is the host's own address and port.
func (k Kind) Mapping() Behavior {
	switch k {
	case NoNAT, OneToOne, AddressRestricted, PortRestricted, DoubleNAT, PortSet, CarrierNAT:
		return EndpointIndependent
	case Symmetric:
		return AddressAndPortDependent
	default:
		return BehaviorUnknown
	}
}

// TCPMapping returns the TCP mapping behaviour of the kind, as seen from
// LAN1 by connections from one local port to different servers: masquerade
// and 1:1 NAT treat TCP as they treat UDP, and UDPBlocked masquerades TCP
// (endpoint-independent).
func (k Kind) TCPMapping() Behavior {
	if k == UDPBlocked {
		return EndpointIndependent
	}
	return k.Mapping()
}

// IPv6Filtering returns the filtering behaviour of the kind's router for
// IPv6 (Config.IPv6), where there is no NAT and mapping is always
// endpoint-independent (the host's own address): NoNAT's router filters
// nothing, UDPBlocked's drops UDP (BehaviorUnknown), every other router runs a
// stateful firewall that admits only replies (address-and-port-dependent).
func (k Kind) IPv6Filtering() Behavior {
	switch k {
	case NoNAT:
		return EndpointIndependent
	case UDPBlocked, KindUnknown:
		return BehaviorUnknown
	default:
		return AddressAndPortDependent
	}
}

// Filtering returns the UDP filtering behaviour of the kind for LAN1's
// mappings (BehaviorUnknown for UDPBlocked and KindUnknown).
func (k Kind) Filtering() Behavior {
	switch k {
	case NoNAT, OneToOne:
		return EndpointIndependent
	case AddressRestricted:
		return AddressDependent
	case PortRestricted, Symmetric, DoubleNAT, PortSet, CarrierNAT:
		return AddressAndPortDependent
	default:
		return BehaviorUnknown
	}
}

// Hairpins reports whether a UDP packet sent from the LAN to a LAN host's
// public mapping comes back into the LAN when the lab is built with
// Config.Hairpin set to hairpin.
//
// NoNAT always "hairpins" (the mapping is the host's own address). UDPBlocked
// never does. DoubleNAT never does: the home NAT has no public mapping of its
// own and the carrier-grade NAT does not hairpin, as many do not.
func (k Kind) Hairpins(hairpin bool) bool {
	switch k {
	case NoNAT:
		return true
	case OneToOne, AddressRestricted, PortRestricted, Symmetric:
		return hairpin
	default:
		return false
	}
}
