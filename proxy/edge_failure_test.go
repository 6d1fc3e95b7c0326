package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
)

// countingEcho echoes whatever a connection sends and counts the
// connections open at once.
type countingEcho struct {
	addr       string
	open, peak atomic.Int64
}

func newCountingEcho(t testing.TB) *countingEcho {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &countingEcho{addr: l.Addr().String()}
	netcoretest.Serve(t, l, func(c net.Conn) {
		n := b.open.Add(1)
		defer b.open.Add(-1)
		for {
			p := b.peak.Load()
			if n <= p || b.peak.CompareAndSwap(p, n) {
				break
			}
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		io.Copy(c, c)
	})
	return b
}

// TestEdgeManyStreams: 1000 client connections open through the tunnel at
// once, each a ClientHello and a random payload echoed back intact by the
// backend, over each transport. The clients come from 100 loopback
// addresses in 5 /24s (10 each), within the public proxy's default
// per-source and per-network limits, so that what is tested is the
// tunnel: every stream must be open at the same time (the backend's
// peak) and every byte must come back.
func TestEdgeManyStreams(t *testing.T) {
	const streams, perSource = 1000, 10
	for _, tr := range []TunnelTransport{TransportQUIC, TransportTCP} {
		t.Run(tr.String(), func(t *testing.T) {
			be := newCountingEcho(t)
			edgeKey, homeKey := testKey(t), testKey(t)
			e := &Edge{Key: edgeKey, Agents: []EdgeAgent{
				{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"echo.example.com"}},
			}}
			ea := startEdge(t, e)
			_, pubAddr := publicProxy(t, e)
			a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"echo.example.com"}, Transport: tr,
				Target: &Pool{Backends: []string{be.addr}, HealthCheck: HealthCheck{Interval: -1}}}
			startAgent(t, a)
			hello := makeHello(t, &tls.Config{ServerName: "echo.example.com"})

			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			var ready sync.WaitGroup
			ready.Add(streams)
			allReady := make(chan struct{})
			errs := make(chan error, streams)
			var wg sync.WaitGroup
			for i := range streams {
				wg.Go(func() {
					errs <- func() error {
						readyOnce := sync.OnceFunc(ready.Done)
						defer readyOnce()
						src := fmt.Sprintf("127.1.%d.%d", i/perSource/20, i/perSource%20+1)
						c, err := dialFrom(ctx, src, pubAddr)
						if err != nil {
							return err
						}
						defer c.Close()
						stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
						defer stop()
						if _, err := c.Write(hello); err != nil {
							return fmt.Errorf("stream %d: write hello: %w", i, err)
						}
						back := make([]byte, len(hello))
						if _, err := io.ReadFull(c, back); err != nil {
							return fmt.Errorf("stream %d: hello echo: %w", i, err)
						}
						if !bytes.Equal(back, hello) {
							return fmt.Errorf("stream %d: hello came back changed", i)
						}
						readyOnce()
						select {
						case <-allReady:
						case <-ctx.Done():
							return ctx.Err()
						}
						payload := make([]byte, 16<<10)
						rand.Read(payload)
						rerr := make(chan error, 1)
						got := make([]byte, len(payload))
						go func() {
							_, err := io.ReadFull(c, got)
							rerr <- err
						}()
						if _, err := c.Write(payload); err != nil {
							return fmt.Errorf("stream %d: write: %w", i, err)
						}
						if err := <-rerr; err != nil {
							return fmt.Errorf("stream %d: read echo: %w", i, err)
						}
						if !bytes.Equal(got, payload) {
							return fmt.Errorf("stream %d: payload came back changed", i)
						}
						return nil
					}()
				})
			}
			ready.Wait()
			open := e.Stats().Streams
			close(allReady)
			wg.Wait()
			close(errs)
			failed := 0
			for err := range errs {
				if err != nil {
					if failed < 5 {
						t.Error(err)
					}
					failed++
				}
			}
			if failed > 0 {
				t.Errorf("%d of %d streams failed", failed, streams)
			}
			if open != streams || be.peak.Load() != streams {
				t.Errorf("at the barrier: edge carried %d streams, backend peak %d; want %d both", open, be.peak.Load(), streams)
			}
			if s := e.Stats(); s.StreamsTotal != streams || s.NoAgent != 0 {
				t.Errorf("edge stats %+v, want %d streams in total, none failed", s, streams)
			}
		})
	}
}

// lossyPacketConn drops every datagram both ways once drop is set: UDP
// blocked on the path, or a machine gone without a word.
type lossyPacketConn struct {
	net.PacketConn
	drop atomic.Bool
}

func (c *lossyPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.drop.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

func (c *lossyPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.drop.Load() {
			return n, addr, err
		}
	}
}

// waitEdge polls e's counters until ok: the edge has no change signal
// for its stream counts.
func waitEdge(t *testing.T, e *Edge, ok func(EdgeStats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(e.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("edge stats not reached within 10 s: %+v", e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connectedAfter waits until a's tunnel to edge i is up on a connection
// made after t0 and returns how long after t0 that was.
func connectedAfter(t *testing.T, a *Agent, i int, t0 time.Time, within time.Duration) time.Duration {
	t.Helper()
	st := waitAgent(t, a, within, func(st []AgentEdgeStatus) bool {
		return st[i].Connected && st[i].Since.After(t0)
	})
	return st[i].Since.Sub(t0)
}

// TestEdgeRestart: the edge stops and starts again on the same addresses
// with the same key; the agent is back, and a client reaches the backend
// through the new edge, within 5 s of the new edge listening. "graceful"
// closes the agents' connections (QUIC CONNECTION_CLOSE, a TCP FIN);
// "crash" is an edge gone without a word (its last datagrams dropped), so
// the agent's QUIC connection looks alive until its next keepalive meets
// the new edge's stateless reset: with a 2 s keepalive the idle timeout
// alone (6 s) would miss the 5 s bound.
func TestEdgeRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tr    TunnelTransport
		crash bool
	}{
		{"quic-graceful", TransportQUIC, false},
		{"tcp-graceful", TransportTCP, false},
		{"quic-crash", TransportQUIC, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blog := newTLSBackend(t, "blog.example.com")
			edgeKey, homeKey := testKey(t), testKey(t)
			agents := []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"blog.example.com"}}}
			udp, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			pc := &lossyPacketConn{PacketConn: udp}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			e1 := &Edge{Key: edgeKey, Agents: agents}
			ea := serveEdge(t, e1, pc, l)
			a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e1)}, Names: []string{"blog.example.com"},
				Transport: tc.tr, KeepAlive: 2 * time.Second,
				Target: &Pool{Backends: []string{blog.addr}, HealthCheck: HealthCheck{Interval: -1}}}
			startAgent(t, a)

			if tc.crash {
				pc.drop.Store(true)
			}
			e1.Close()
			// The same addresses again, as a restarted process binds them.
			udp2, err := net.ListenPacket("udp", ea.udp)
			if err != nil {
				t.Fatalf("rebinding the edge's UDP address: %v", err)
			}
			l2, err := net.Listen("tcp", ea.tcp)
			if err != nil {
				udp2.Close()
				t.Fatalf("rebinding the edge's TCP address: %v", err)
			}
			e2 := &Edge{Key: edgeKey, Agents: agents}
			t0 := time.Now()
			serveEdge(t, e2, udp2, l2)
			back := connectedAfter(t, a, 0, t0, 20*time.Second)
			_, pubAddr := publicProxy(t, e2)
			got, err := dialTLS(t.Context(), pubAddr, "blog.example.com", blog.roots)
			served := time.Since(t0)
			if err != nil || got != "blog.example.com " {
				t.Fatalf("through the new edge: %q, %v", got, err)
			}
			t.Logf("agent back %v after the restart, client served after %v", back.Round(time.Millisecond), served.Round(time.Millisecond))
			if served > 5*time.Second {
				t.Errorf("client served %v after the edge restarted, want within 5 s", served)
			}
		})
	}
}

// TestEdgeUDPBlocked: UDP from the agent goes nowhere (the home router
// drops it, no ICMP), so TransportAuto falls back to TLS over TCP after the
// fallback delay and the client is served through it.
func TestEdgeUDPBlocked(t *testing.T) {
	blog := newTLSBackend(t, "blog.example.com")
	edgeKey, homeKey := testKey(t), testKey(t)
	e := &Edge{Key: edgeKey, Agents: []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"blog.example.com"}}}}
	ea := startEdge(t, e)
	_, pubAddr := publicProxy(t, e)
	var blocked atomic.Int32
	a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"blog.example.com"},
		FallbackDelay: 300 * time.Millisecond,
		ListenPacket: func(network, addr string) (net.PacketConn, error) {
			pc, err := net.ListenPacket(network, addr)
			if err != nil {
				return nil, err
			}
			blocked.Add(1)
			l := &lossyPacketConn{PacketConn: pc}
			l.drop.Store(true)
			return l, nil
		},
		Target: &Pool{Backends: []string{blog.addr}, HealthCheck: HealthCheck{Interval: -1}}}
	startAgent(t, a)
	if st := a.Status()[0]; st.Transport != TransportTCP {
		t.Fatalf("agent connected over %v, want tcp", st.Transport)
	}
	if blocked.Load() == 0 {
		t.Fatal("the agent never tried QUIC")
	}
	if st := e.Connected(); len(st) != 1 || st[0].Transport != TransportTCP {
		t.Errorf("edge sees %+v, want one agent over tcp", st)
	}
	if got, err := dialTLS(t.Context(), pubAddr, "blog.example.com", blog.roots); err != nil || got != "blog.example.com " {
		t.Errorf("through the fallback: %q, %v", got, err)
	}
}

// TestEdgeFailover: two agents hold one name. When the first one's tunnel
// goes silent (its UDP dropped both ways, the edge not yet aware), a client
// waits for OpenTimeout on it and is then served by the second; the next
// client goes straight to the second (the silent one is tried last for a
// while).
func TestEdgeFailover(t *testing.T) {
	one := newTLSBackend(t, "blog.example.com")
	two := newTLSBackend(t, "blog.example.com")
	edgeKey, k1, k2 := testKey(t), testKey(t), testKey(t)
	const openTimeout = 500 * time.Millisecond
	e := &Edge{Key: edgeKey, OpenTimeout: openTimeout, Agents: []EdgeAgent{
		{Name: "one", PublicKey: pubOf(k1), Names: []string{"blog.example.com"}},
		{Name: "two", PublicKey: pubOf(k2), Names: []string{"*.example.com"}, MaxStreams: -1},
	}}
	ea := startEdge(t, e)
	_, pubAddr := publicProxy(t, e)
	var pc1 *lossyPacketConn
	a1 := &Agent{Key: k1, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"blog.example.com"}, Transport: TransportQUIC,
		ListenPacket: func(network, addr string) (net.PacketConn, error) {
			pc, err := net.ListenPacket(network, addr)
			if err != nil {
				return nil, err
			}
			pc1 = &lossyPacketConn{PacketConn: pc}
			return pc1, nil
		},
		Target: &Pool{Backends: []string{one.addr}, HealthCheck: HealthCheck{Interval: -1}}}
	startAgent(t, a1)
	a2 := &Agent{Key: k2, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"blog.example.com"}, Transport: TransportQUIC,
		Target: &Pool{Backends: []string{two.addr}, HealthCheck: HealthCheck{Interval: -1}}}
	startAgent(t, a2)

	// Both idle: the first agent registered is first.
	if _, err := dialTLS(t.Context(), pubAddr, "blog.example.com", one.roots); err != nil || one.count() != 1 {
		t.Fatalf("before the failure: err %v, first backend served %d", err, one.count())
	}
	// The count drops when the edge's copy ends, a moment after ours.
	waitEdge(t, e, func(s EdgeStats) bool { return s.Streams == 0 })
	pc1.drop.Store(true)
	start := time.Now()
	if _, err := dialTLS(t.Context(), pubAddr, "blog.example.com", two.roots); err != nil {
		t.Fatalf("failover: %v", err)
	}
	if d := time.Since(start); d < openTimeout {
		t.Errorf("served in %v, before the silent agent's OpenTimeout %v: was it tried?", d, openTimeout)
	}
	if s := e.Stats(); s.Failovers != 1 || two.count() != 1 {
		t.Errorf("failovers %d, second backend served %d; want 1 and 1", s.Failovers, two.count())
	}
	start = time.Now()
	if _, err := dialTLS(t.Context(), pubAddr, "blog.example.com", two.roots); err != nil {
		t.Fatalf("after the failover: %v", err)
	}
	if d := time.Since(start); d >= openTimeout {
		t.Errorf("the next client waited %v: the silent agent was tried first again", d)
	}
	if s := e.Stats(); s.Failovers != 1 || two.count() != 2 {
		t.Errorf("failovers %d, second backend served %d; want 1 and 2", s.Failovers, two.count())
	}
}

// TestEdgeAgentStreamCap: agent "busy" may carry 4 client connections at
// once. Clients of its name from one source and from many hold far more
// open: 4 reach its backend, every other one is closed at once (not left
// hanging), and the other agent's clients are all served meanwhile.
func TestEdgeAgentStreamCap(t *testing.T) {
	const limit = 4
	busyBE := newCountingEcho(t)
	calm := newTLSBackend(t, "calm.example.com")
	edgeKey, kb, kc := testKey(t), testKey(t), testKey(t)
	e := &Edge{Key: edgeKey, OpenTimeout: time.Minute, Agents: []EdgeAgent{
		{Name: "busy", PublicKey: pubOf(kb), Names: []string{"busy.example.com"}, MaxStreams: limit},
		{Name: "calm", PublicKey: pubOf(kc), Names: []string{"calm.example.com"}},
	}}
	ea := startEdge(t, e)
	_, pubAddr := publicProxy(t, e)
	startAgent(t, &Agent{Key: kb, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"busy.example.com"},
		Target: &Pool{Backends: []string{busyBE.addr}, HealthCheck: HealthCheck{Interval: -1}}})
	startAgent(t, &Agent{Key: kc, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"calm.example.com"},
		Target: &Pool{Backends: []string{calm.addr}, HealthCheck: HealthCheck{Interval: -1}}})
	hello := makeHello(t, &tls.Config{ServerName: "busy.example.com"})

	for _, sources := range []int{1, 20} {
		t.Run(fmt.Sprintf("%d-sources", sources), func(t *testing.T) {
			const attackers = 40
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			served, refused := 0, 0
			var slowest time.Duration
			for i := range attackers {
				c, err := dialFrom(ctx, fmt.Sprintf("127.2.0.%d", i%sources+1), pubAddr)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
				start := time.Now()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write(hello)
				back := make([]byte, len(hello))
				if _, err := io.ReadFull(c, back); err == nil {
					served++
					continue
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("attacker %d left hanging: %v", i, err)
				}
				refused++
				slowest = max(slowest, time.Since(start))
			}
			if served != limit || busyBE.open.Load() != limit {
				t.Errorf("%d attackers served, %d open at the backend; want %d", served, busyBE.open.Load(), limit)
			}
			if refused != attackers-limit {
				t.Errorf("%d refused, want %d", refused, attackers-limit)
			}
			t.Logf("refusals took at most %v", slowest)
			for i := range 20 {
				if got, err := dialTLS(ctx, pubAddr, "calm.example.com", calm.roots); err != nil || got != "calm.example.com " {
					t.Fatalf("calm client %d during the attack: %q, %v", i, got, err)
				}
			}
		})
	}
}

// TestEdgeStreamAnswer: the edge waits for the agent's one-byte answer
// before it forwards more than the header and the peek, so every way a
// backend may start must still answer the client promptly (OpenTimeout is
// a minute here, the clients' deadline 10 s): a backend that closes
// without writing gives a close, counted as a carried stream, not a failed
// agent; a backend that reads more than the ClientHello before it speaks
// gets the rest (sent only once the hello reached it, so not in the peek);
// an HTTP POST body of 200 KiB reaches the backend.
func TestEdgeStreamAnswer(t *testing.T) {
	hello := makeHello(t, &tls.Config{ServerName: "blog.example.com"})
	const extra = 100
	for _, tr := range []TunnelTransport{TransportQUIC, TransportTCP} {
		t.Run(tr.String(), func(t *testing.T) {
			silent, _ := net.Listen("tcp", "127.0.0.1:0")
			netcoretest.Serve(t, silent, func(c net.Conn) {
				io.ReadFull(c, make([]byte, len(hello)))
			})
			greedy, _ := net.Listen("tcp", "127.0.0.1:0")
			gotHello := make(chan struct{}, 1)
			netcoretest.Serve(t, greedy, func(c net.Conn) {
				if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
					return
				}
				gotHello <- struct{}{}
				if _, err := io.ReadFull(c, make([]byte, extra)); err == nil {
					io.WriteString(c, "all there")
				}
			})
			post := newEdgeEchoHTTPBackend(t)
			edgeKey, homeKey := testKey(t), testKey(t)
			e := &Edge{Key: edgeKey, OpenTimeout: time.Minute, Agents: []EdgeAgent{
				{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"*.example.com"}},
			}}
			ea := startEdge(t, e)
			_, pubAddr := publicProxy(t, e)
			pool := func(addr string) *Pool {
				return &Pool{Backends: []string{addr}, HealthCheck: HealthCheck{Interval: -1}}
			}
			a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"*.example.com"}, Transport: tr}
			homeProxy(t, a,
				Route{Protocol: ProtocolTLS, Host: "blog.example.com", Target: pool(silent.Addr().String())},
				Route{Protocol: ProtocolTLS, Host: "shop.example.com", Target: pool(greedy.Addr().String())},
				Route{Protocol: ProtocolHTTP, Host: "wiki.example.com", Target: pool(post)})
			startAgent(t, a)

			// exchange sends each of send, the next once the one before
			// reached the backend if wait is set, and reads to the end.
			exchange := func(wait chan struct{}, send ...[]byte) (string, error) {
				c, err := net.Dial("tcp", pubAddr)
				if err != nil {
					return "", err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				for i, b := range send {
					if i > 0 && wait != nil {
						select {
						case <-wait:
						case <-time.After(10 * time.Second):
							return "", errors.New("the backend got no hello")
						}
					}
					if _, err := c.Write(b); err != nil {
						return "", err
					}
				}
				got, err := io.ReadAll(c)
				return string(got), err
			}
			if got, err := exchange(nil, hello); err != nil || got != "" {
				t.Errorf("silent backend: %q, %v; want a close", got, err)
			}
			shopHello := makeHello(t, &tls.Config{ServerName: "shop.example.com"})
			if len(shopHello) != len(hello) {
				t.Fatalf("hellos of %d and %d bytes", len(shopHello), len(hello))
			}
			// The rest after the hello reached the backend: not in the peek.
			if got, err := exchange(gotHello, shopHello, bytes.Repeat([]byte{1}, extra)); err != nil || got != "all there" {
				t.Errorf("backend reading past the hello: %q, %v", got, err)
			}
			body := strings.Repeat("p", 200<<10)
			got, err := exchange(nil, []byte("POST / HTTP/1.1\r\nHost: wiki.example.com\r\nConnection: close\r\nContent-Length: "+
				strconv.Itoa(len(body))+"\r\n\r\n"+body))
			if err != nil || !strings.HasSuffix(got, "\r\n\r\n"+strconv.Itoa(len(body))) {
				t.Errorf("POST: %.80q, %v", got, err)
			}
			if s := e.Stats(); s.StreamsTotal != 3 || s.NoAgent != 0 || s.Failovers != 0 {
				t.Errorf("edge stats %+v, want 3 streams carried, none failed", s)
			}
		})
	}
}

// newEdgeEchoHTTPBackend answers a request with the length of its body.
func newEdgeEchoHTTPBackend(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strconv.FormatInt(n, 10))
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(l) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return l.Addr().String()
}
