package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRouteSwapUnderLoad swaps the route table every few milliseconds while
// clients connect: none may be refused, reset or misrouted.
func TestRouteSwapUnderLoad(t *testing.T) {
	a := newTLSBackend(t, "swap.test")
	b := newTLSBackend(t, "swap.test")
	pa := &Pool{Backends: []string{a.addr}}
	pb := &Pool{Backends: []string{b.addr}}
	var p Proxy
	must(t, p.AddSNIRoute("swap.test", pa))
	addr := serve(t, &p)

	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for ctx.Err() == nil {
				got, err := dialTLSAny(t, addr, "swap.test")
				if err != nil || got != "swap.test " {
					if ctx.Err() == nil {
						failed.Add(1)
						t.Logf("connection failed: %q %v", got, err)
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	swaps := 0
	for ctx.Err() == nil {
		pool := pa
		if swaps%2 == 0 {
			pool = pb
		}
		must(t, p.SetRoutes([]Route{{Protocol: ProtocolTLS, Host: "swap.test", Target: pool}}))
		if err := p.SetRoutes([]Route{{Protocol: ProtocolTLS, Host: "bad*.test", Target: pool}}); err == nil {
			t.Error("invalid table accepted")
		}
		swaps++
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d swaps, %d connections ok, %d failed; a=%d b=%d", swaps, ok.Load(), failed.Load(), a.count(), b.count())
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("%d failed, %d ok", failed.Load(), ok.Load())
	}
	if a.count() == 0 || b.count() == 0 {
		t.Error("swaps did not take effect")
	}
}

func TestLimits(t *testing.T) {
	be := newRawBackend(t)
	p := &Proxy{MaxPeeksPerSource: 2, PeekTimeout: 5 * time.Second}
	rej := newRejects(p)
	must(t, p.AddSNIRoute("", &Pool{Backends: []string{be.addr}}))
	addr := serve(t, p)
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitFor(t, "2 pending peeks", func() bool { return p.Stats().Accepted == 2 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rej.want(t, ReasonLimit, 2*time.Second)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); errors.Is(err, context.DeadlineExceeded) || err == nil {
		t.Errorf("third connection read: %v, want closed", err)
	}
	c.Close()
	for _, c := range idle {
		c.Close()
	}
	rej.want(t, ReasonClosed, 2*time.Second)
	rej.want(t, ReasonClosed, 2*time.Second)

	// MaxConns counts routed connections too.
	p2 := &Proxy{MaxConns: 1}
	rej2 := newRejects(p2)
	must(t, p2.AddHTTPHostRoute("", &Pool{Backends: []string{be.addr}}))
	addr2 := serve(t, p2)
	c1, err := net.Dial("tcp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	io.WriteString(c1, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	waitFor(t, "routed", func() bool { return p2.Stats().Routed == 1 })
	c2, err := net.Dial("tcp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rej2.want(t, ReasonLimit, 2*time.Second)
}

func TestShutdown(t *testing.T) {
	be := newTLSBackend(t, "sd.test")
	var p Proxy
	must(t, p.AddSNIRoute("sd.test", &Pool{Backends: []string{be.addr}}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()

	// A long-lived connection: the backend writes, then waits for our close.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tlsClient(c, "sd.test", be)
	if _, err := tc.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	// Shutdown waits for it, then gives up when ctx ends and closes it.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("Shutdown returned after %v without waiting", el)
	}
	if err := <-served; err != ErrServerClosed {
		t.Errorf("Serve = %v", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Error("listener still open")
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(tc); errors.Is(err, context.DeadlineExceeded) {
		t.Error("connection not closed by Shutdown")
	}
	if err := p.Serve(l); err != ErrServerClosed {
		t.Errorf("Serve after Shutdown = %v", err)
	}
}

// TestReuseportTakeover starts a second proxy on the same port, shuts the
// first down, and checks that new connections keep being served.
func TestReuseportTakeover(t *testing.T) {
	be := newTLSBackend(t, "ru.test")
	l1, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l1.Addr().String()
	l2, err := Listen("tcp", addr)
	if err != nil {
		t.Fatalf("second listener on %s: %v", addr, err)
	}
	var p1, p2 Proxy
	for _, p := range []*Proxy{&p1, &p2} {
		must(t, p.AddSNIRoute("ru.test", &Pool{Backends: []string{be.addr}}))
	}
	d1, d2 := make(chan error, 1), make(chan error, 1)
	go func() { d1 <- p1.Serve(l1) }()
	go func() { d2 <- p2.Serve(l2) }()
	t.Cleanup(func() { p2.Close(); <-d2 })
	if err := p1.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-d1
	for i := range 20 {
		got, err := dialTLS(t.Context(), addr, "ru.test", be.roots)
		if err != nil || got != "ru.test " {
			t.Fatalf("connection %d after takeover: %q, %v", i, got, err)
		}
	}
}

func TestServeWithoutRoutes(t *testing.T) {
	p := &Proxy{}
	rej := newRejects(p)
	addr := serve(t, p)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	rej.want(t, ReasonNoRoute, 5*time.Second)
}

// TestHalfClose: the client's FIN reaches the backend, which answers after
// it; the answer and the backend's FIN reach the client.
func TestHalfClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(c) // until the client's FIN
			if len(b) > 0 {
				fmt.Fprintf(c, "got %d", len(b))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	var p Proxy
	must(t, p.AddSNIRoute("hc.test", &Pool{Backends: []string{l.Addr().String()}}))
	addr := serve(t, &p)
	hello := makeHello(t, &tls.Config{ServerName: "hc.test"})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(hello)
	c.Write(make([]byte, 100000))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if want := fmt.Sprintf("got %d", len(hello)+100000); err != nil || string(got) != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

func TestServeProtocol(t *testing.T) {
	be := newRawBackend(t)
	tests := []struct {
		listener Protocol
		send     []byte
		want     Reason // ReasonUnknown: routed
	}{
		{ProtocolTLS, makeHello(t, &tls.Config{ServerName: "sp.test"}), ReasonUnknown},
		{ProtocolTLS, []byte("GET / HTTP/1.1\r\nHost: sp.test\r\n\r\n"), ReasonNotTLS},
		{ProtocolHTTP, []byte("GET / HTTP/1.1\r\nHost: sp.test\r\n\r\n"), ReasonUnknown},
		{ProtocolHTTP, makeHello(t, &tls.Config{ServerName: "sp.test"}), ReasonBadRequest},
	}
	for _, tt := range tests {
		p := &Proxy{}
		rej := newRejects(p)
		must(t, p.AddSNIRoute("sp.test", &Pool{Backends: []string{be.addr}}))
		must(t, p.AddHTTPHostRoute("sp.test", &Pool{Backends: []string{be.addr}}))
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.ServeProtocol(l, tt.listener) }()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(tt.send)
		c.(*net.TCPConn).CloseWrite()
		if tt.want != ReasonUnknown {
			rej.want(t, tt.want, 5*time.Second)
		} else {
			select {
			case <-be.got:
			case r := <-rej.c:
				t.Errorf("%v listener: rejected %v", tt.listener, r)
			case <-time.After(5 * time.Second):
				t.Errorf("%v listener: not routed", tt.listener)
			}
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		reply, _ := io.ReadAll(c)
		if tt.want == ReasonNotTLS && !strings.HasPrefix(string(reply), "HTTP/1.1 400") {
			t.Errorf("plain HTTP on a TLS listener got %q, want a 400", reply)
		}
		c.Close()
		p.Close()
		<-done
	}
}

// TestTargetFunc: a custom target gets the conn, the hello and the peeked
// bytes, and owns the conn.
func TestTargetFunc(t *testing.T) {
	hello := makeHello(t, &tls.Config{ServerName: "Custom.Test", NextProtos: []string{"x/1"}})
	got := make(chan *Conn, 1)
	var p Proxy
	must(t, p.AddSNIRoute("custom.test", TargetFunc(func(ctx context.Context, c *Conn) {
		defer c.Close()
		fmt.Fprintf(c, "%s %v", c.Hello.ServerName, c.Hello.ALPN)
		got <- c
	})))
	addr := serve(t, &p)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hello)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if string(b) != "custom.test [x/1]" {
		t.Errorf("target wrote %q", b)
	}
	tc := <-got
	if string(tc.Peeked) != string(hello) || tc.Hello.Protocol != ProtocolTLS || tc.Hello.Source.String() != c.LocalAddr().String() {
		t.Errorf("conn: %d peeked bytes, hello %+v", len(tc.Peeked), tc.Hello)
	}
}

// A client that sees its connection closed for a reason finds that reason
// already counted (and reported to OnReject): tests and monitors read
// Stats right after.
func TestRejectCountedBeforeClose(t *testing.T) {
	p := &Proxy{}
	var seen atomic.Int64
	p.OnReject = func(*Hello, Reason) { seen.Add(1) }
	addr := serve(t, p)
	for i := 1; i <= 200; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, c) // the 404, then the close
		c.Close()
		if n := p.Stats().Rejected["no route"]; n != uint64(i) || seen.Load() != int64(i) {
			t.Fatalf("after %d rejected connections: %d counted, %d reported", i, n, seen.Load())
		}
	}
}

// TestConnReplaysPeek: a custom Target that only copies from the Conn
// sends the backend the ClientHello routing read, then what follows, each
// byte once: through io.Copy (WriteTo, spliced after the replay) and
// through small Reads. Before, Read started after the peek, and such a
// Target sent the backend a stream without its ClientHello.
func TestConnReplaysPeek(t *testing.T) {
	hello := makeHello(t, &tls.Config{ServerName: "replay.test"})
	const rest = "and then the rest of the stream"
	for _, c := range []struct {
		name string
		cp   func(dst net.Conn, src *Conn) error
	}{
		{"io.Copy", func(dst net.Conn, src *Conn) error { _, err := io.Copy(dst, src); return err }},
		{"7-byte reads", func(dst net.Conn, src *Conn) error {
			buf := make([]byte, 7)
			for {
				n, err := src.Read(buf)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return werr
				}
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			got := make(chan string, 1)
			go func() {
				bc, err := l.Accept()
				if err != nil {
					got <- err.Error()
					return
				}
				defer bc.Close()
				b, _ := io.ReadAll(bc)
				got <- string(b)
			}()
			var p Proxy
			must(t, p.AddSNIRoute("replay.test", TargetFunc(func(ctx context.Context, conn *Conn) {
				defer conn.Close()
				bc, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					return
				}
				defer bc.Close()
				if c.cp(bc, conn) == nil {
					bc.(*net.TCPConn).CloseWrite()
				}
			})))
			cl, err := net.Dial("tcp", serve(t, &p))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			cl.Write(hello)
			cl.Write([]byte(rest))
			cl.(*net.TCPConn).CloseWrite()
			select {
			case b := <-got:
				if b != string(hello)+rest {
					t.Errorf("backend got %d bytes (hello first: %v), want the %d-byte hello then %q",
						len(b), strings.HasPrefix(b, string(hello)), len(hello), rest)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("backend got nothing")
			}
		})
	}
}
