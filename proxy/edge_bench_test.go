package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// Edge benchmarks: the same client work direct to a backend and through
// public proxy → edge → tunnel (QUIC or TLS/TCP) → agent → pool, all on
// loopback in one process. Compare the sub-benchmarks of one run:
//
//	go test -run '^$' -bench 'BenchmarkEdge' -benchtime 2s ./proxy/
//
// conns: a new TLS connection per op (full handshake with the backend,
// which answers and closes); bulk: MB/s read on one connection from a
// backend that writes without pause; ttfb: connect, send a ClientHello,
// first byte back; p50 and p99 reported in µs.

// rawBench is a backend that reads the client's hello, then either writes
// one byte (ttfb) or writes without end (bulk).
func rawBench(b *testing.B, helloLen int, bulk bool) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, max(helloLen, 256<<10))
				if _, err := io.ReadFull(c, buf[:helloLen]); err != nil {
					return
				}
				if !bulk {
					c.Write(buf[:1])
					io.Copy(io.Discard, c)
					return
				}
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			})
		}
	})
	b.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}

// benchPaths returns the address to dial for each path to backend.
func benchPaths(b *testing.B, name, backend string) []struct{ name, addr string } {
	paths := []struct{ name, addr string }{{"direct", backend}}
	for _, tr := range []TunnelTransport{TransportQUIC, TransportTCP} {
		edgeKey, homeKey := testKey(b), testKey(b)
		e := &Edge{Key: edgeKey, Agents: []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: []string{name}, MaxStreams: -1}}}
		ea := startEdge(b, e)
		p := &Proxy{MaxPeeksPerSource: -1, MaxPeeksPerNetwork: -1, MaxConnsPerSource: -1}
		if err := p.SetRoutes(e.Routes()); err != nil {
			b.Fatal(err)
		}
		pub := serve(b, p)
		a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{name}, Transport: tr, MaxStreams: -1,
			Target: &Pool{Backends: []string{backend}, HealthCheck: HealthCheck{Interval: -1}}}
		startAgent(b, a)
		paths = append(paths, struct{ name, addr string }{tr.String(), pub})
	}
	return paths
}

func BenchmarkEdgeConns(b *testing.B) {
	be := newTLSBackend(b, "blog.example.com")
	for _, p := range benchPaths(b, "blog.example.com", be.addr) {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				if got, err := dialTLS(b.Context(), p.addr, "blog.example.com", be.roots); err != nil || got != "blog.example.com " {
					b.Fatalf("%q, %v", got, err)
				}
			}
		})
	}
}

func BenchmarkEdgeBulk(b *testing.B) {
	hello := makeHello(b, &tls.Config{ServerName: "bulk.example.com"})
	be := rawBench(b, len(hello), true)
	for _, p := range benchPaths(b, "bulk.example.com", be) {
		b.Run(p.name, func(b *testing.B) {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(hello); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEdgeTTFB(b *testing.B) {
	hello := makeHello(b, &tls.Config{ServerName: "ttfb.example.com"})
	be := rawBench(b, len(hello), false)
	for _, p := range benchPaths(b, "ttfb.example.com", be) {
		b.Run(p.name, func(b *testing.B) {
			var lat []time.Duration
			one := make([]byte, 1)
			for b.Loop() {
				start := time.Now()
				c, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(hello); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				c.Close()
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
