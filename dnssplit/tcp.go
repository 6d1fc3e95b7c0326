package dnssplit

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/miekg/dns"
)

// Serve answers DNS over TCP connections accepted from l until Shutdown or
// Close; it closes l when it returns, and returns ErrServerClosed after
// Shutdown or Close. Temporary accept errors (EMFILE, out of descriptors)
// pause accepting instead of ending Serve. Queries on one connection are
// pipelined: answered concurrently and written as they complete.
//
// Connections are bounded per listener by MaxTCPConns in total and by
// MaxTCPConnsPerSource and MaxTCPConnsPerNetwork per client address and
// client network. When every slot is taken, a new connection replaces the
// connection that has been idle longest (no query in flight), as RFC 7766
// section 6.2.3 allows: clients holding slots without using them cannot
// shut others out.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	if !s.track(l, nil, nil) {
		l.Close()
		return ErrServerClosed
	}
	defer s.wg.Done()
	defer s.untrack(l, nil, nil)
	defer l.Close()
	slots := &tcpSlots{
		max: s.maxTCPConns(),
		counter: netcore.ConnCounter{
			PerAddr: s.maxTCPConnsPerSource(),
			PerNet:  s.maxTCPConnsPerNetwork(),
		},
		conns: make(map[*tcpConn]struct{}),
		now:   s.now,
	}
	err := netcore.AcceptLoop(l, s.done, func(c net.Conn) {
		tc, why := slots.admit(c)
		if tc == nil {
			s.stats.tcpRejected.Add(1)
			s.noteRefusal(refusedTCP)
			s.logger().Debug("dnssplit: tcp connection refused", "client", c.RemoteAddr().String(), "reason", why)
			c.Close()
			return
		}
		if tc.evicted != nil {
			s.stats.tcpEvicted.Add(1)
			s.logger().Debug("dnssplit: idle tcp connection closed for a new one", "client", tc.evicted.src.String())
		}
		if !s.track(nil, nil, c) {
			slots.release(tc)
			c.Close()
			return
		}
		go func() {
			defer s.wg.Done()
			defer slots.release(tc)
			defer s.untrack(nil, nil, c)
			s.serveConn(tc)
		}()
	})
	if err != nil && !s.isClosed() {
		return fmt.Errorf("dnssplit: tcp accept: %w", err)
	}
	return ErrServerClosed
}

// tcpConn is one accepted connection and how recently it was used.
type tcpConn struct {
	net.Conn
	src      netip.Addr
	last     atomic.Int64 // unix nanoseconds of the last complete query or reply
	inflight atomic.Int32 // queries read and not yet answered
	// evicted is the connection closed to make room for this one, if any
	// (for the caller's log and stats only).
	evicted *tcpConn
}

func (c *tcpConn) touch(now time.Time) { c.last.Store(now.UnixNano()) }

// tcpSlots bounds the connections of one listener.
type tcpSlots struct {
	max     int
	counter netcore.ConnCounter
	now     func() time.Time

	mu    sync.Mutex
	conns map[*tcpConn]struct{}
}

// admit takes a slot for c, closing the idlest connection if every slot is
// taken. It returns nil and the reason if c must be refused.
func (t *tcpSlots) admit(c net.Conn) (*tcpConn, string) {
	tc := &tcpConn{Conn: c, src: netcore.Addr(c.RemoteAddr())}
	if v := t.counter.Acquire(tc.src); v != netcore.Allowed {
		return nil, v.String()
	}
	tc.touch(t.now())
	t.mu.Lock()
	if len(t.conns) >= t.max {
		victim := t.idlestLocked()
		if victim == nil {
			t.mu.Unlock()
			t.counter.Release(tc.src)
			return nil, "all connections busy"
		}
		delete(t.conns, victim)
		tc.evicted = victim
		// Closing makes the victim's reader return; its goroutine releases
		// its per-source count (not its slot, taken over here).
		victim.Close()
	}
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, ""
}

// idlestLocked returns the connection without a query in flight that was
// used least recently, or nil if every connection is answering one. The scan
// is over at most max connections and runs only when all slots are taken.
func (t *tcpSlots) idlestLocked() *tcpConn {
	var victim *tcpConn
	var oldest int64
	for c := range t.conns {
		if c.inflight.Load() > 0 {
			continue
		}
		if l := c.last.Load(); victim == nil || l < oldest {
			victim, oldest = c, l
		}
	}
	return victim
}

func (t *tcpSlots) release(c *tcpConn) {
	t.counter.Release(c.src)
	t.mu.Lock()
	delete(t.conns, c) // no-op for an evicted connection
	t.mu.Unlock()
}

func (s *Server) serveConn(c *tcpConn) {
	defer c.Close()
	src := netcore.AddrPort(c.RemoteAddr())
	local := netcore.Addr(c.LocalAddr())
	var (
		wmu sync.Mutex
		wg  sync.WaitGroup
	)
	defer wg.Wait()
	inflight := make(chan struct{}, tcpPipeline)
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		c.SetWriteDeadline(time.Now().Add(s.tcpIdle()))
		out := make([]byte, 2+len(b))
		binary.BigEndian.PutUint16(out, uint16(len(b)))
		copy(out[2:], b)
		_, err := c.Write(out)
		c.touch(s.now())
		return err
	}
	var lenBuf [2]byte
	for {
		c.SetReadDeadline(time.Now().Add(s.tcpIdle()))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint16(lenBuf[:])
		if n < 12 {
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		c.touch(s.now())
		if isTransfer(msg) {
			// A transfer writes several messages; it runs alone.
			wg.Wait()
			c.inflight.Add(1)
			err := s.serveTransfer(msg, src, local, write)
			c.inflight.Add(-1)
			if err != nil {
				s.logger().Debug("dnssplit: transfer", "client", src, "err", err)
				return
			}
			continue
		}
		inflight <- struct{}{}
		c.inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			defer c.inflight.Add(-1)
			if out := s.handle(s.bgCtx, msg, src, local, true); out != nil {
				if err := write(out); err != nil {
					c.Close()
				}
			}
		}()
	}
}

// isTransfer reports whether a raw query asks for AXFR or IXFR.
func isTransfer(msg []byte) bool {
	var h dns.Msg
	if err := h.Unpack(msg); err != nil || len(h.Question) != 1 {
		return false
	}
	t := h.Question[0].Qtype
	return t == dns.TypeAXFR || t == dns.TypeIXFR
}
