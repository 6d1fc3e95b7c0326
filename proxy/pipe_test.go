package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
)

// silentBackend accepts connections, reads whatever comes and never
// answers or closes them before the test ends.
func silentBackend(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// echoBackend writes back everything it reads.
func echoBackend(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	netcoretest.Serve(t, l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.Copy(c, c)
	})
	return l.Addr().String()
}

// TestAbandonedConnFreed fills every slot with clients that send a hello
// to a backend that never answers and then go away: the slots must come
// back within the half-close grace, and a legitimate client must then be
// served.
func TestAbandonedConnFreed(t *testing.T) {
	silent := silentBackend(t)
	good := newTLSBackend(t, "ok.test")
	p := &Proxy{MaxConns: 4, HalfCloseTimeout: 300 * time.Millisecond, IdleTimeout: -1}
	must(t, p.AddSNIRoute("silent.test", &Pool{Backends: []string{silent}}))
	must(t, p.AddSNIRoute("ok.test", &Pool{Backends: []string{good.addr}}))
	addr := serve(t, p)
	hello := makeHello(t, &tls.Config{ServerName: "silent.test"})
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(hello)
		c.Close()
	}
	waitFor(t, "4 routed", func() bool { return p.Stats().Routed == 4 })
	waitFor(t, "abandoned slots freed", func() bool { return p.Stats().Open == 0 })
	got, err := dialTLS(t.Context(), addr, "ok.test", good.roots)
	if err != nil || got != "ok.test " {
		t.Fatalf("legitimate client after the grace: %q, %v", got, err)
	}
}

// TestIdleTimeout checks that two silent peers lose their routed
// connection after IdleTimeout, while a connection that keeps carrying a
// little data stays up past it.
func TestIdleTimeout(t *testing.T) {
	silent, echo := silentBackend(t), echoBackend(t)
	const idle = time.Second
	p := &Proxy{IdleTimeout: idle}
	must(t, p.AddSNIRoute("silent.test", &Pool{Backends: []string{silent}}))
	must(t, p.AddSNIRoute("echo.test", &Pool{Backends: []string{echo}}))
	addr := serve(t, p)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(makeHello(t, &tls.Config{ServerName: "silent.test"}))
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("silent connection read: %v, want EOF from the idle timeout", err)
	}
	if d := time.Since(start); d < idle/2 {
		t.Errorf("closed after %v, before the idle timeout %v", d, idle)
	}

	// An echo connection that sends a byte every 50 ms for 3 idle periods.
	e, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	hello := makeHello(t, &tls.Config{ServerName: "echo.test"})
	e.Write(hello)
	e.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(e, make([]byte, len(hello))); err != nil {
		t.Fatalf("echo of the hello: %v", err)
	}
	for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := e.Write([]byte{1}); err != nil {
			t.Fatalf("active connection write: %v", err)
		}
		if _, err := io.ReadFull(e, make([]byte, 1)); err != nil {
			t.Fatalf("active connection closed: %v", err)
		}
	}
}
