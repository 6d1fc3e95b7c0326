package relay

import (
	"net"

	"net/netip"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// packetConn sits between a client-facing UDP socket and the engine: every
// STUN datagram passes inspect first; ChannelData is relayed at once
// (relayChannelData) and never reaches the engine. The engine reads it from
// one goroutine.
type packetConn struct {
	s     *Server
	pc    net.PacketConn
	udp   *net.UDPConn // pc, when it is one: zero-allocation reads and writes
	local net.Addr
	srv   netip.AddrPort

	// batched reads (recvmmsg) and writes when the socket is a *net.UDPConn
	io    *netcore.BatchConn
	batch []netcore.Datagram
	next  int // next unread datagram in batch
	count int // datagrams read by the last batch

	src   frameSource
	addrs map[netip.AddrPort]*net.UDPAddr // reader-only cache

	once      sync.Once
	done      chan struct{} // closed when ReadFrom failed: the engine's loop ends
	err       error
	closeOnce sync.Once
	closing   chan struct{} // closed by Close: ends a read back-off
	backoff   time.Duration // reader-only: pause after failed reads in a row
}

// Back-off bounds after failed UDP reads, as for accept errors: recover
// within a second once descriptors are free, never spin a core.
const (
	readMinBackoff = 5 * time.Millisecond
	readMaxBackoff = time.Second
)

func newPacketConn(s *Server, pc net.PacketConn) *packetConn {
	w := &packetConn{
		s:       s,
		pc:      pc,
		local:   localAddr16(pc.LocalAddr()),
		srv:     netcore.AddrPort(pc.LocalAddr()),
		addrs:   make(map[netip.AddrPort]*net.UDPAddr),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	w.udp, _ = pc.(*net.UDPConn)
	if w.udp != nil {
		w.io = netcore.NewBatchConn(w.udp)
		w.batch = make([]netcore.Datagram, max(s.batchSize(), 1))
		for i := range w.batch {
			w.batch[i].Buf = make([]byte, 2048)
		}
	}
	w.src = frameSource{server: w.srv, transport: "udp", reply: w.reply}
	return w
}

// reply answers the client of the frame being inspected.
func (w *packetConn) reply(b []byte) {
	if b != nil {
		_ = w.write(b, w.src.client)
	}
}

// write sends b to a client; safe for concurrent use.
func (w *packetConn) write(b []byte, to netip.AddrPort) error {
	if w.io != nil {
		return w.io.WriteTo(b, to)
	}
	_, err := w.pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

// localAddr16 keeps a UDP socket's address with a 16-byte IP (see udpAddr16).
func localAddr16(a net.Addr) net.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		return udpAddr16(unmapAP(ua.AddrPort()))
	}
	return a
}

func (w *packetConn) readOne(p []byte) (int, netip.AddrPort, net.Addr, error) {
	if w.io != nil {
		if w.next >= w.count {
			n, err := w.io.ReadBatch(w.batch)
			if err != nil {
				return 0, netip.AddrPort{}, nil, err
			}
			w.next, w.count = 0, n
		}
		d := &w.batch[w.next]
		w.next++
		return copy(p, d.Buf[:d.N]), d.Addr, nil, nil // BatchConn unmaps
	}
	n, a, err := w.pc.ReadFrom(p)
	return n, netcore.AddrPort(a), a, err
}

// ReadFrom returns the next datagram the engine should handle.
func (w *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, ap, a, err := w.readOne(p)
		if err != nil {
			if !netcore.IsClosed(err) && w.pause() {
				// EMFILE, ENOBUFS and the like must not stop the
				// server: count, pause (longer each time in a row), go on.
				w.s.counters.readErrors.Add(1)
				w.s.logger().Debug("relay: udp read", "err", err)
				continue
			}
			w.err = err
			w.once.Do(func() { close(w.done) })
			return 0, nil, err
		}
		w.backoff = 0
		if isChannelData(p[:n]) {
			w.s.relayChannelData(p[:n], allocKey{client: ap, server: w.srv})
			continue
		}
		w.src.client = ap
		if w.s.inspect(p[:n], &w.src) {
			if a == nil {
				a = udpAddr(w.addrs, ap)
			}
			return n, a, nil
		}
	}
}

// WriteTo sends to a client.
func (w *packetConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if w.io != nil {
		if ua, ok := addr.(*net.UDPAddr); ok {
			if err := w.io.WriteTo(p, ua.AddrPort()); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return w.pc.WriteTo(p, addr)
}

// pause waits out the read back-off; false means Close came first.
func (w *packetConn) pause() bool {
	w.backoff = min(max(2*w.backoff, readMinBackoff), readMaxBackoff)
	t := time.NewTimer(w.backoff)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.closing:
		return false
	}
}

func (w *packetConn) Close() error {
	w.closeOnce.Do(func() { close(w.closing) })
	return w.pc.Close()
}

func (w *packetConn) LocalAddr() net.Addr                { return w.local }
func (w *packetConn) SetDeadline(t time.Time) error      { return w.pc.SetDeadline(t) }
func (w *packetConn) SetReadDeadline(t time.Time) error  { return w.pc.SetReadDeadline(t) }
func (w *packetConn) SetWriteDeadline(t time.Time) error { return w.pc.SetWriteDeadline(t) }
