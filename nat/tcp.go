package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// Serve answers STUN Binding requests over TCP (RFC 5389 framing: messages
// back to back on the stream) on connections accepted from l, until Close.
// If the listener's address is one of the four given by Primary and
// Alternate, responses carry OTHER-ADDRESS too. It always returns a non-nil
// error, ErrServerClosed after Close.
func (s *Server) Serve(l net.Listener) error {
	if err := s.track(nil, l); err != nil {
		return err
	}
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if retryAccept(err) {
				// Temporary accept failure (EMFILE and the like): back off.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-s.done:
				}
				continue
			}
			return fmt.Errorf("nat: accept: %w", err)
		}
		delay = 0
		src := localAddrPort(c.RemoteAddr()).Addr()
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		if s.perSrc[src] >= maxConnsPerSource {
			s.mu.Unlock()
			s.stats.tcpRejected.Add(1) // before Close: the client may look at once
			c.Close()
			continue
		}
		s.perSrc[src]++
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.stats.tcpConns.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			if s.perSrc[src]--; s.perSrc[src] <= 0 {
				delete(s.perSrc, src)
			}
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// retryAccept reports whether an Accept error is passing: out of
// descriptors or memory, a connection aborted before it was accepted, a
// timeout. Remote clients can cause these, so they must not end serving.
func retryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// Temporary is deprecated for its vague meaning, but on accept errors it
	// names exactly EMFILE, ENFILE, ECONNABORTED and the like (net/http
	// uses it the same way).
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

func (s *Server) serveConn(c net.Conn) {
	local := localAddrPort(c.LocalAddr())
	from := localAddrPort(c.RemoteAddr())
	var addrs [4]netip.AddrPort
	idx := 0
	rfc5780 := false
	if s.Alternate.IsValid() {
		four := s.fourAddrs()
		for i, a := range four {
			if a == local {
				addrs, idx, rfc5780 = four, i, true
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
		if !s.limit.allow(from.Addr(), s.rateLimit(), time.Now()) {
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
