package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// packetConn sits between a client-facing UDP socket and the engine: every
// datagram passes inspect first. The engine reads it from one goroutine.
type packetConn struct {
	s     *Server
	pc    net.PacketConn
	udp   *net.UDPConn // pc, when it is one: zero-allocation reads and writes
	local net.Addr
	srv   netip.AddrPort

	src   frameSource
	addrs map[netip.AddrPort]*net.UDPAddr // reader-only cache

	once sync.Once
	done chan struct{} // closed when ReadFrom failed: the engine's loop ends
	err  error
}

func newPacketConn(s *Server, pc net.PacketConn) *packetConn {
	w := &packetConn{
		s:     s,
		pc:    pc,
		local: localAddr16(pc.LocalAddr()),
		srv:   addrPortOf(pc.LocalAddr()),
		addrs: make(map[netip.AddrPort]*net.UDPAddr),
		done:  make(chan struct{}),
	}
	w.udp, _ = pc.(*net.UDPConn)
	w.src = frameSource{server: w.srv, transport: "udp", reply: w.reply}
	return w
}

// reply answers the client of the frame being inspected.
func (w *packetConn) reply(b []byte) {
	if b != nil {
		_, _ = w.pc.WriteTo(b, udpAddr(w.addrs, w.src.client))
	}
}

// localAddr16 keeps a UDP socket's address with a 16-byte IP (see udpAddr16).
func localAddr16(a net.Addr) net.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		return udpAddr16(unmapAP(ua.AddrPort()))
	}
	return a
}

func (w *packetConn) readOne(p []byte) (int, netip.AddrPort, net.Addr, error) {
	if w.udp != nil {
		n, ap, err := w.udp.ReadFromUDPAddrPort(p)
		return n, unmapAP(ap), nil, err
	}
	n, a, err := w.pc.ReadFrom(p)
	return n, addrPortOf(a), a, err
}

// ReadFrom returns the next datagram the engine should handle.
func (w *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, ap, a, err := w.readOne(p)
		if err != nil {
			w.err = err
			w.once.Do(func() { close(w.done) })
			return 0, nil, err
		}
		w.src.client = ap
		if isChannelData(p[:n]) || w.s.inspect(p[:n], &w.src) {
			if a == nil {
				a = udpAddr(w.addrs, ap)
			}
			return n, a, nil
		}
	}
}

// WriteTo sends to a client.
func (w *packetConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if w.udp != nil {
		if ua, ok := addr.(*net.UDPAddr); ok {
			return w.udp.WriteToUDPAddrPort(p, ua.AddrPort())
		}
	}
	return w.pc.WriteTo(p, addr)
}

func (w *packetConn) Close() error                       { return w.pc.Close() }
func (w *packetConn) LocalAddr() net.Addr                { return w.local }
func (w *packetConn) SetDeadline(t time.Time) error      { return w.pc.SetDeadline(t) }
func (w *packetConn) SetReadDeadline(t time.Time) error  { return w.pc.SetReadDeadline(t) }
func (w *packetConn) SetWriteDeadline(t time.Time) error { return w.pc.SetWriteDeadline(t) }
