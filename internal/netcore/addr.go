package netcore

import (
	"net"
	"net/netip"
)

// AddrPort returns a's IP address and port, with an IPv4-mapped IPv6 address
// (::ffff:192.0.2.1, as a dual-stack socket reports IPv4 peers) turned into
// the plain IPv4 address and any zone kept. It returns the zero AddrPort for
// nil or an address that carries no IP (a Unix socket, net.Pipe).
//
// Every package converts with this one function, so that an ACL, a
// per-source limit and a log line all see 192.0.2.1 for the same peer.
func AddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		if a == nil {
			return netip.AddrPort{}
		}
		return fromIP(a.IP, a.Zone, a.Port)
	case *net.UDPAddr:
		if a == nil {
			return netip.AddrPort{}
		}
		return fromIP(a.IP, a.Zone, a.Port)
	case *net.IPAddr:
		if a == nil {
			return netip.AddrPort{}
		}
		return fromIP(a.IP, a.Zone, 0)
	case nil:
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return Canonical(ap)
}

// Addr is AddrPort(a).Addr().
func Addr(a net.Addr) netip.Addr { return AddrPort(a).Addr() }

// Canonical returns ap with an IPv4-mapped address unmapped.
func Canonical(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

func fromIP(ip net.IP, zone string, port int) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port < 0 || port > 0xffff {
		return netip.AddrPort{}
	}
	a = a.Unmap()
	if zone != "" && a.Is6() {
		a = a.WithZone(zone)
	}
	return netip.AddrPortFrom(a, uint16(port))
}

// UDPAddr converts back for the standard library's socket calls.
func UDPAddr(ap netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(ap) }

// Network returns the prefix of the given length (bits4 for IPv4, bits6 for
// IPv6) that holds a, unmapped first: the key for per-network limits.
func Network(a netip.Addr, bits4, bits6 int) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := bits6
	if a.Is4() {
		bits = bits4
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.PrefixFrom(a, a.BitLen())
	}
	return p
}
