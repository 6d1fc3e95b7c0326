package relay

import (
	"net/netip"
)

// PeerPolicy decides which peer addresses the relay may send to and receive
// from. Its zero value denies every address that is not globally routable
// (loopback, unspecified, private, CGNAT, link-local including the cloud
// metadata address 169.254.169.254, documentation, benchmarking, multicast,
// reserved, IPv6 unique-local and link-local), so a relay cannot be used as
// a proxy into the network it runs in.
//
// Addresses are canonicalised before they are checked: IPv4-mapped
// (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and
// 6to4 (2002::/16) forms are checked as the IPv4 address they carry.
//
// PeerPolicy is plain data and safe for concurrent use once built.
type PeerPolicy struct {
	// Allow optionally lists prefixes exempt from the built-in deny list,
	// for example a co-located SFU at 10.0.0.5/32. A prefix matches the
	// canonical form of the address only, so allowing 64:ff9b::/96 does not
	// open 64:ff9b::7f00:1 (127.0.0.1).
	Allow []netip.Prefix

	// Deny optionally lists extra prefixes to deny. A prefix matches the
	// address as sent or its canonical form. Deny wins over Allow.
	Deny []netip.Prefix
}

// Denial says why a peer address was refused; empty means allowed.
type Denial string

// Reasons a peer address is refused.
const (
	DenyUnspecified   Denial = "unspecified"
	DenyLoopback      Denial = "loopback"
	DenyPrivate       Denial = "private"
	DenyShared        Denial = "shared address space (CGNAT)"
	DenyLinkLocal     Denial = "link-local"
	DenyDocumentation Denial = "documentation"
	DenyBenchmarking  Denial = "benchmarking"
	DenyMulticast     Denial = "multicast"
	DenyReserved      Denial = "reserved"
	DenyUniqueLocal   Denial = "unique-local"
	DenyConfigured    Denial = "denied by configuration"
	DenyInvalid       Denial = "invalid address"
)

type specialRange struct {
	prefix netip.Prefix
	reason Denial
}

// specialRanges is the IANA special-purpose address registry (IPv4 and IPv6)
// reduced to the entries a relay must not reach. Globally reachable anycast
// entries (e.g. 192.31.196.0/24 AS112) are left out on purpose.
var specialRanges = []specialRange{
	{netip.MustParsePrefix("0.0.0.0/8"), DenyUnspecified},
	{netip.MustParsePrefix("10.0.0.0/8"), DenyPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), DenyShared},
	{netip.MustParsePrefix("127.0.0.0/8"), DenyLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), DenyLinkLocal},
	{netip.MustParsePrefix("172.16.0.0/12"), DenyPrivate},
	{netip.MustParsePrefix("192.0.0.0/24"), DenyReserved},
	{netip.MustParsePrefix("192.0.2.0/24"), DenyDocumentation},
	{netip.MustParsePrefix("192.88.99.0/24"), DenyReserved},
	{netip.MustParsePrefix("192.168.0.0/16"), DenyPrivate},
	{netip.MustParsePrefix("198.18.0.0/15"), DenyBenchmarking},
	{netip.MustParsePrefix("198.51.100.0/24"), DenyDocumentation},
	{netip.MustParsePrefix("203.0.113.0/24"), DenyDocumentation},
	{netip.MustParsePrefix("224.0.0.0/4"), DenyMulticast},
	{netip.MustParsePrefix("240.0.0.0/4"), DenyReserved}, // includes 255.255.255.255

	{netip.MustParsePrefix("::/128"), DenyUnspecified},
	{netip.MustParsePrefix("::1/128"), DenyLoopback},
	{netip.MustParsePrefix("::/96"), DenyReserved},          // IPv4-compatible leftovers
	{netip.MustParsePrefix("::ffff:0:0/96"), DenyReserved},  // mapped, if not unmapped
	{netip.MustParsePrefix("64:ff9b:1::/48"), DenyReserved}, // local-use NAT64 (RFC 8215)
	{netip.MustParsePrefix("100::/64"), DenyReserved},       // discard-only
	{netip.MustParsePrefix("2001:2::/48"), DenyBenchmarking},
	{netip.MustParsePrefix("2001:db8::/32"), DenyDocumentation},
	{netip.MustParsePrefix("2001::/23"), DenyReserved}, // IETF protocol assignments, Teredo
	{netip.MustParsePrefix("3fff::/20"), DenyDocumentation},
	{netip.MustParsePrefix("5f00::/16"), DenyReserved}, // SRv6 SIDs
	{netip.MustParsePrefix("fc00::/7"), DenyUniqueLocal},
	{netip.MustParsePrefix("fe80::/10"), DenyLinkLocal},
	{netip.MustParsePrefix("fec0::/10"), DenyLinkLocal}, // deprecated site-local
	{netip.MustParsePrefix("ff00::/8"), DenyMulticast},
}

var (
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour      = netip.MustParsePrefix("2002::/16")
	ipv4Compatible = netip.MustParsePrefix("::/96")
	// ipv4Translated is RFC 2765's IPv4-translated form ::ffff:0:a.b.c.d.
	ipv4Translated = netip.MustParsePrefix("::ffff:0:0:0/96")
)

// Canonical returns the address a peer address really designates: the IPv4
// address embedded in IPv4-mapped, IPv4-compatible, IPv4-translated
// (::ffff:0:0:0/96, RFC 2765), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
// IPv6 forms, or addr itself. The zone is dropped.
func Canonical(addr netip.Addr) netip.Addr {
	addr = addr.WithZone("")
	if addr.Is4In6() {
		return addr.Unmap()
	}
	if !addr.Is6() {
		return addr
	}
	b := addr.As16()
	switch {
	case nat64WellKnown.Contains(addr), ipv4Translated.Contains(addr):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case sixToFour.Contains(addr):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	case ipv4Compatible.Contains(addr) && !addr.IsUnspecified() && addr != netip.IPv6Loopback():
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	return addr
}

// Check reports why addr is refused, or "" when the relay may reach it.
func (p *PeerPolicy) Check(addr netip.Addr) Denial {
	if !addr.IsValid() {
		return DenyInvalid
	}
	canon := Canonical(addr)
	plain := addr.WithZone("")
	for _, d := range p.Deny {
		if d.Contains(canon) || d.Contains(plain) {
			return DenyConfigured
		}
	}
	for _, a := range p.Allow {
		if a.Contains(canon) {
			return ""
		}
	}
	for _, r := range specialRanges {
		if r.prefix.Contains(canon) {
			return r.reason
		}
	}
	return ""
}
