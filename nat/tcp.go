package nat

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Serve answers STUN Binding requests over TCP (RFC 5389 framing: messages
// back to back on the stream) on connections accepted from l, until Close.
// If the listener's address is one of the four given by Primary and
// Alternate, responses carry OTHER-ADDRESS too. Passing accept errors
// (EMFILE and the like) back off and do not stop it. It closes l when it
// returns, and always returns a non-nil error, ErrServerClosed after Close.
func (s *Server) Serve(l net.Listener) error {
	var four *[4]netip.AddrPort
	if s.Primary.IsValid() && s.Alternate.IsValid() {
		a := fourAddrs(s.Primary, s.Alternate)
		four = &a
	}
	return s.serveTCP(l, four)
}

// serveTCP is Serve with the RFC 5780 addresses (nil: a plain server).
func (s *Server) serveTCP(l net.Listener, four *[4]netip.AddrPort) error {
	if err := s.track(nil, l); err != nil {
		return err
	}
	defer s.wg.Done()
	defer s.untrack(nil, l)
	counted := countErrors{Listener: l, n: &s.stats.readErrors}
	err := netcore.AcceptLoop(counted, s.done, func(c net.Conn) {
		src := netcore.Addr(c.RemoteAddr())
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		if s.perSrc[src] >= maxConnsPerSource {
			s.mu.Unlock()
			s.stats.tcpRejected.Add(1) // before Close: the client may look at once
			s.logger().Debug("nat: tcp connection over the per-source cap", "from", src)
			c.Close()
			return
		}
		s.perSrc[src]++
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.stats.tcpConns.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c, four)
			s.mu.Lock()
			delete(s.conns, c)
			if s.perSrc[src]--; s.perSrc[src] <= 0 {
				delete(s.perSrc, src)
			}
			s.mu.Unlock()
			c.Close()
		}()
	})
	if err == nil || s.isClosed() {
		return ErrServerClosed
	}
	return fmt.Errorf("nat: accept: %w", err)
}

// countErrors counts the listener's failed accepts (the loop retries the
// passing ones).
type countErrors struct {
	net.Listener
	n *atomic.Uint64
}

func (c countErrors) Accept() (net.Conn, error) {
	cn, err := c.Listener.Accept()
	if err != nil && netcore.IsTemporary(err) {
		c.n.Add(1)
	}
	return cn, err
}

func (s *Server) serveConn(c net.Conn, four *[4]netip.AddrPort) {
	local := netcore.AddrPort(c.LocalAddr())
	from := netcore.AddrPort(c.RemoteAddr())
	var addrs [4]netip.AddrPort
	idx := 0
	rfc5780 := false
	if four != nil {
		for i, a := range four {
			if a == local {
				addrs, idx, rfc5780 = *four, i, true
			}
		}
	}
	if !rfc5780 {
		addrs[0] = local
	}
	buf := make([]byte, maxMessage)
	var out []byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, buf[:20]); err != nil {
			return
		}
		n := 20 + int(binary.BigEndian.Uint16(buf[2:4]))
		if n > len(buf) || buf[0]&0xc0 != 0 {
			// Not STUN framing: the stream cannot be resynchronised.
			s.stats.dropped.Add(1)
			return
		}
		if _, err := io.ReadFull(c, buf[20:n]); err != nil {
			return
		}
		if !s.allow(from.Addr()) {
			s.stats.rateLimited.Add(1)
			continue
		}
		r := s.respond(out[:0], buf[:n], from, idx, addrs, rfc5780, true)
		out = r.data
		if len(out) == 0 {
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}
