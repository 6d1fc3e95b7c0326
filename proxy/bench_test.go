package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
)

func BenchmarkParseHello(b *testing.B) {
	hello := makeHello(b, &tls.Config{ServerName: "blog.example.com", NextProtos: []string{"h2", "http/1.1"}})
	b.SetBytes(int64(len(hello)))
	cfg := newCaptureConfig()
	b.ReportAllocs()
	for b.Loop() {
		n, done, err := scanHello(hello)
		if !done || err != nil {
			b.Fatal(err)
		}
		if _, err := parseHello(b.Context(), cfg, hello[:n]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	var routes []Route
	for i := range 1000 {
		routes = append(routes, Route{Protocol: ProtocolTLS, Host: fmt.Sprintf("host%d.example.com", i), Target: namedTarget("x")})
	}
	routes = append(routes, Route{Protocol: ProtocolTLS, Host: "*.wild.example.com", Target: namedTarget("w")})
	tab, err := newTable(routes)
	if err != nil {
		b.Fatal(err)
	}
	h := &Hello{Protocol: ProtocolTLS, ServerName: "a.b.wild.example.com", Source: netip.MustParseAddrPort("192.0.2.1:1")}
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := tab.match(h); r == nil {
			b.Fatal("no match")
		}
	}
}

// BenchmarkConn measures one connection through the proxy: accept, peek,
// route, dial, replay, close. The backend closes at once.
func BenchmarkConn(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	defer func() { l.Close(); <-done }()
	p := &Proxy{MaxPeeksPerSource: -1}
	must(b, p.AddSNIRoute("bench.test", &Pool{Backends: []string{l.Addr().String()}, HealthCheck: HealthCheck{Interval: -1}}))
	addr := serve(b, p)
	hello := makeHello(b, &tls.Config{ServerName: "bench.test"})
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(hello)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
}

// BenchmarkBulk measures one 64 MiB download through the proxy (the backend
// writes, the client reads): the spliced path, and the idle-timeout and
// half-close machinery around it.
func BenchmarkBulk(b *testing.B) {
	const size = 64 << 20
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256<<10)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				hello := make([]byte, 1)
				if _, err := c.Read(hello); err != nil {
					return
				}
				for left := size; left > 0; left -= len(buf) {
					if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
						return
					}
				}
				// Close after the client: unread hello bytes would reset.
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	defer func() { l.Close(); <-done }()
	p := &Proxy{MaxPeeksPerSource: -1}
	must(b, p.AddSNIRoute("bench.test", &Pool{Backends: []string{l.Addr().String()}, HealthCheck: HealthCheck{Interval: -1}}))
	addr := serve(b, p)
	hello := makeHello(b, &tls.Config{ServerName: "bench.test"})
	b.SetBytes(size)
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(hello)
		n, _ := io.Copy(io.Discard, c)
		c.(*net.TCPConn).CloseWrite()
		c.Close()
		if n != size {
			b.Fatalf("read %d of %d bytes", n, size)
		}
	}
}
