package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// dialFrom connects to addr from the loopback address src (any of 127/8).
func dialFrom(ctx context.Context, src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.DialContext(ctx, "tcp", addr)
}

// tlsVia is dialTLS from the loopback address src.
func tlsVia(ctx context.Context, src, addr, name string, b *tlsBackend) (string, error) {
	c, err := dialFrom(ctx, src, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tlsClient(c, name, b)
	out, err := io.ReadAll(tc)
	return string(out), err
}

// TestMaxConnsPerSource lets one source hold its share of routed
// connections, refuses it more (in total and on a route with its own cap),
// and keeps serving other sources.
func TestMaxConnsPerSource(t *testing.T) {
	silent := silentBackend(t)
	good := newTLSBackend(t, "ok.test")
	p := &Proxy{MaxConnsPerSource: 3, IdleTimeout: -1}
	rej := newRejects(p)
	must(t, p.AddSNIRoute("silent.test", &Pool{Backends: []string{silent}}))
	must(t, p.AddRoute(Route{Protocol: ProtocolTLS, Host: "one.test", Target: &Pool{Backends: []string{silent}}, MaxConnsPerSource: 1}))
	must(t, p.AddSNIRoute("ok.test", &Pool{Backends: []string{good.addr}}))
	addr := serve(t, p)
	hold := func(src, name string) net.Conn {
		t.Helper()
		c, err := dialFrom(t.Context(), src, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Write(makeHello(t, &tls.Config{ServerName: name}))
		return c
	}
	// The per-route cap: a second connection of one source to one.test.
	hold("127.0.0.1", "one.test")
	waitFor(t, "1 routed", func() bool { return p.Stats().Routed == 1 })
	hold("127.0.0.1", "one.test")
	rej.want(t, ReasonLimit, 5*time.Second)
	// The proxy-wide cap counts every route: two more, then refused.
	hold("127.0.0.1", "silent.test")
	hold("127.0.0.1", "silent.test")
	waitFor(t, "3 routed", func() bool { return p.Stats().Routed == 3 })
	hold("127.0.0.1", "silent.test")
	rej.want(t, ReasonLimit, 5*time.Second)
	if got, _ := tlsVia(t.Context(), "127.0.0.1", addr, "ok.test", good); got != "" {
		t.Errorf("fourth connection of a source at its cap served: %q", got)
	}
	// Another source is served, on both routes.
	for _, src := range []string{"127.0.0.2", "127.0.1.1"} {
		if got, err := tlsVia(t.Context(), src, addr, "ok.test", good); err != nil || got != "ok.test " {
			t.Errorf("legitimate client %s: %q, %v", src, got, err)
		}
	}
	hold("127.0.0.2", "one.test")
	waitFor(t, "one.test from another source", func() bool { return p.Stats().Routed == 6 })
}

// TestMaxConnsPerSourceDefault checks the limit is on in the zero value.
func TestMaxConnsPerSourceDefault(t *testing.T) {
	var p Proxy
	if got := p.maxConnsPerSource(); got != defaultMaxConnsPerSource || got <= 0 {
		t.Errorf("zero Proxy's per-source limit = %d", got)
	}
	p.MaxConnsPerSource = -1
	if got := p.maxConnsPerSource(); got > 0 {
		t.Errorf("negative per-source limit = %d, want none", got)
	}
}
