package dnssplit

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// packetIO reads queries with the address they arrived on and writes replies
// from that same address, so a multi-homed host (or one listening on the
// unspecified address) answers from the address the client asked.
type packetIO interface {
	read(b []byte) (n int, src netip.AddrPort, local netip.Addr, err error)
	write(b []byte, dst netip.AddrPort, local netip.Addr) error
}

func newPacketIO(c net.PacketConn) packetIO {
	bound := netip.Addr{}
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		bound = ua.AddrPort().Addr().Unmap()
	}
	p := plainIO{c: c, bound: bound}
	if _, ok := c.(*net.UDPConn); !ok || !bound.IsValid() {
		return p
	}
	if bound.Is4() {
		pc := ipv4.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv4.FlagDst, true); err == nil {
			return v4IO{pc: pc, p: p}
		}
		return p
	}
	pc := ipv6.NewPacketConn(c)
	if err := pc.SetControlMessage(ipv6.FlagDst, true); err == nil {
		// A dual-stack socket also needs IPv4 destinations; failing that we
		// still learn IPv6 ones.
		_ = ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst, true)
		return v6IO{pc: pc, p: p}
	}
	return p
}

type plainIO struct {
	c     net.PacketConn
	bound netip.Addr
}

func (p plainIO) read(b []byte) (int, netip.AddrPort, netip.Addr, error) {
	n, a, err := p.c.ReadFrom(b)
	return n, addrPortOf(a), p.bound, err
}

func (p plainIO) write(b []byte, dst netip.AddrPort, _ netip.Addr) error {
	_, err := p.c.WriteTo(b, net.UDPAddrFromAddrPort(dst))
	return err
}

type v4IO struct {
	pc *ipv4.PacketConn
	p  plainIO
}

func (v v4IO) read(b []byte) (int, netip.AddrPort, netip.Addr, error) {
	n, cm, a, err := v.pc.ReadFrom(b)
	local := v.p.bound
	if cm != nil {
		if d, ok := netip.AddrFromSlice(cm.Dst); ok {
			local = d.Unmap()
		}
	}
	return n, addrPortOf(a), local, err
}

func (v v4IO) write(b []byte, dst netip.AddrPort, local netip.Addr) error {
	var cm *ipv4.ControlMessage
	if v.p.bound.IsUnspecified() && local.IsValid() && !local.IsUnspecified() {
		cm = &ipv4.ControlMessage{Src: local.AsSlice()}
	}
	_, err := v.pc.WriteTo(b, cm, net.UDPAddrFromAddrPort(dst))
	return err
}

type v6IO struct {
	pc *ipv6.PacketConn
	p  plainIO
}

func (v v6IO) read(b []byte) (int, netip.AddrPort, netip.Addr, error) {
	n, cm, a, err := v.pc.ReadFrom(b)
	local := v.p.bound
	if cm != nil {
		if d, ok := netip.AddrFromSlice(cm.Dst); ok {
			local = d.Unmap()
		}
	}
	return n, addrPortOf(a), local, err
}

func (v v6IO) write(b []byte, dst netip.AddrPort, local netip.Addr) error {
	var cm *ipv6.ControlMessage
	if v.p.bound.IsUnspecified() && local.IsValid() && !local.IsUnspecified() {
		src := local
		if src.Is4() {
			src = netip.AddrFrom16(src.As16())
		}
		cm = &ipv6.ControlMessage{Src: src.AsSlice()}
	}
	_, err := v.pc.WriteTo(b, cm, net.UDPAddrFromAddrPort(dst))
	return err
}

// addrPortOf converts a net.Addr from a UDP or TCP socket to a netip.AddrPort
// with IPv4-mapped addresses unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
