package proxy

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/quic-go/quic-go"
)

// TunnelTransport selects how an [Agent] reaches an [Edge].
type TunnelTransport int

// Tunnel transports.
const (
	TransportUnknown TunnelTransport = iota // treated as TransportAuto
	TransportAuto                           // QUIC, and TLS over TCP too if QUIC has not connected after the fallback delay
	TransportQUIC                           // QUIC only (UDP)
	TransportTCP                            // TLS 1.3 over TCP with yamux streams only
)

// String returns "auto", "quic", "tcp" or "unknown".
func (t TunnelTransport) String() string {
	switch t {
	case TransportAuto:
		return "auto"
	case TransportQUIC:
		return "quic"
	case TransportTCP:
		return "tcp"
	}
	return "unknown"
}

// ParseTunnelTransport parses the names String returns ("" means auto).
func ParseTunnelTransport(s string) (TunnelTransport, error) {
	switch s {
	case "", "auto":
		return TransportAuto, nil
	case "quic":
		return TransportQUIC, nil
	case "tcp":
		return TransportTCP, nil
	}
	return TransportUnknown, fmt.Errorf("proxy: bad tunnel transport %q: want auto, quic or tcp", s)
}

// tunnelSession is one authenticated connection between an agent and an
// edge, carrying streams: a QUIC connection, or yamux over TLS over TCP.
// Streams are net.Conns with CloseWrite (a FIN on the stream).
type tunnelSession interface {
	open(ctx context.Context) (net.Conn, error)
	accept(ctx context.Context) (net.Conn, error)
	close(msg string)
	done() <-chan struct{}
	peerKey() ed25519.PublicKey
	remoteAddr() net.Addr
	transport() TunnelTransport
}

// Stream error code sent when a stream is closed abortively.
const quicStreamAbort quic.StreamErrorCode = 1

// quicSession is a QUIC connection; owned, if set, a transport and socket
// that close with it (the agent's side).
type quicSession struct {
	conn  *quic.Conn
	key   ed25519.PublicKey
	owned func()
}

func newQUICSession(c *quic.Conn, owned func()) (*quicSession, error) {
	cs := c.ConnectionState().TLS
	k, err := peerKey(rawCerts(cs))
	if err != nil {
		c.CloseWithError(0, "")
		if owned != nil {
			owned()
		}
		return nil, err
	}
	return &quicSession{conn: c, key: k, owned: owned}, nil
}

func rawCerts(cs tls.ConnectionState) [][]byte {
	var raw [][]byte
	for _, c := range cs.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	return raw
}

func (s *quicSession) open(ctx context.Context) (net.Conn, error) {
	st, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &quicStream{Stream: st, conn: s.conn}, nil
}

func (s *quicSession) accept(ctx context.Context) (net.Conn, error) {
	st, err := s.conn.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return &quicStream{Stream: st, conn: s.conn}, nil
}

func (s *quicSession) close(msg string) {
	s.conn.CloseWithError(0, msg)
	if s.owned != nil {
		s.owned()
	}
}

func (s *quicSession) done() <-chan struct{}      { return s.conn.Context().Done() }
func (s *quicSession) peerKey() ed25519.PublicKey { return s.key }
func (s *quicSession) remoteAddr() net.Addr       { return s.conn.RemoteAddr() }
func (s *quicSession) transport() TunnelTransport { return TransportQUIC }

// quicStream makes a QUIC stream a net.Conn: Close ends both directions,
// CloseWrite only ours.
type quicStream struct {
	*quic.Stream
	conn *quic.Conn
}

func (s *quicStream) LocalAddr() net.Addr  { return s.conn.LocalAddr() }
func (s *quicStream) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }
func (s *quicStream) CloseWrite() error    { return s.Stream.Close() }

func (s *quicStream) Close() error {
	s.Stream.CancelRead(quicStreamAbort)
	return s.Stream.Close()
}

// yamuxSession is yamux over a TLS connection.
type yamuxSession struct {
	mux *yamux.Session
	key ed25519.PublicKey
}

// yamuxConfig is the multiplexer's configuration on both ends.
func yamuxConfig(keepAlive time.Duration) *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = keepAlive
	// Enough streams waiting for the agent's accept loop for a burst of
	// new client connections; the accept loop does not block on them.
	c.AcceptBacklog = 1024
	// 1 MiB per stream lets one stream fill a 100 Mbit/s path with an
	// 80 ms round trip; a slow client holds at most that at the edge.
	c.MaxStreamWindowSize = 1 << 20
	c.StreamOpenTimeout = 10 * time.Second
	// A stream whose peer never closes its side is dropped after the
	// proxy's own half-close limit.
	c.StreamCloseTimeout = halfCloseTimeout
	c.ConnectionWriteTimeout = 10 * time.Second
	c.LogOutput = io.Discard
	return c
}

func newYamuxSession(tc *tls.Conn, client bool, keepAlive time.Duration) (*yamuxSession, error) {
	k, err := peerKey(rawCerts(tc.ConnectionState()))
	if err != nil {
		tc.Close()
		return nil, err
	}
	var mux *yamux.Session
	if client {
		mux, err = yamux.Client(tc, yamuxConfig(keepAlive))
	} else {
		mux, err = yamux.Server(tc, yamuxConfig(keepAlive))
	}
	if err != nil {
		tc.Close()
		return nil, err
	}
	return &yamuxSession{mux: mux, key: k}, nil
}

func (s *yamuxSession) open(ctx context.Context) (net.Conn, error) {
	type res struct {
		st  *yamux.Stream
		err error
	}
	// OpenStream blocks only while the peer has not acknowledged earlier
	// streams; honour ctx around it.
	ch := make(chan res, 1)
	go func() {
		st, err := s.mux.OpenStream()
		ch <- res{st, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		return yamuxStream{r.st}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.st != nil {
				r.st.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func (s *yamuxSession) accept(ctx context.Context) (net.Conn, error) {
	st, err := s.mux.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, err
	}
	return yamuxStream{st}, nil
}

func (s *yamuxSession) close(string)               { s.mux.Close() }
func (s *yamuxSession) done() <-chan struct{}      { return s.mux.CloseChan() }
func (s *yamuxSession) peerKey() ed25519.PublicKey { return s.key }
func (s *yamuxSession) remoteAddr() net.Addr       { return s.mux.RemoteAddr() }
func (s *yamuxSession) transport() TunnelTransport { return TransportTCP }

// yamuxStream: yamux's Close sends a FIN and keeps reading, a half-close.
type yamuxStream struct{ *yamux.Stream }

func (s yamuxStream) CloseWrite() error { return s.Stream.Close() }

// ReadFrom copies r into the stream with a pooled buffer (copyPooled).
func (s *quicStream) ReadFrom(r io.Reader) (int64, error) { return copyPooled(s.Stream, r) }

// ReadFrom copies r into the stream with a pooled buffer (copyPooled).
func (s yamuxStream) ReadFrom(r io.Reader) (int64, error) { return copyPooled(s.Stream, r) }

// copyBufs holds the buffers of copyPooled: io.Copy's size, 32 KiB, so
// that an idle copy holds no more than before.
var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// copyPooled is io.Copy with a buffer from copyBufs instead of a new one
// per copy: every proxied connection has a copy into its stream at each end
// of the tunnel (and pipe copies from a stream into a TCP socket, whose
// ReadFrom would fall back to io.Copy), and at thousands of short
// connections a second the allocations made the garbage collector a tenth
// of the tunnel's CPU.
func copyPooled(w io.Writer, r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(writerOnly{w}, r, buf[:])
}

// writerOnly hides a ReadFrom from io.CopyBuffer, which would call it.
type writerOnly struct{ io.Writer }
