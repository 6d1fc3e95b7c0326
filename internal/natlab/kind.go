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
)

// Kinds returns every kind the lab can build, in declaration order.
func Kinds() []Kind {
	return []Kind{NoNAT, OneToOne, AddressRestricted, PortRestricted, Symmetric, UDPBlocked, DoubleNAT}
}

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
	case NoNAT, OneToOne, AddressRestricted, PortRestricted, DoubleNAT:
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
	case PortRestricted, Symmetric, DoubleNAT:
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
