package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
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

// dripper holds n connections from src, each sending the start of a
// ClientHello and then one byte every 500 ms, reconnecting when closed,
// until stop is closed.
func dripper(t *testing.T, wg *sync.WaitGroup, stop <-chan struct{}, src, addr string, n int, hello []byte) {
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := dialFrom(t.Context(), src, addr)
				if err != nil {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				closed := make(chan struct{})
				go func() { c.Read(make([]byte, 1)); close(closed) }()
				c.Write(hello[:6])
				tick := time.NewTicker(500 * time.Millisecond)
				for i := 6; i < len(hello); i++ {
					select {
					case <-stop:
					case <-closed:
					case <-tick.C:
						c.Write(hello[i : i+1])
						continue
					}
					break
				}
				tick.Stop()
				c.Close()
				<-closed
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond): // the reconnect pace of a patient attacker
				}
			}
		})
	}
}

// TestPeekFloodManySources: 40 sources in 40 different /24s each hold 32
// connections dripping ClientHellos (1280 > MaxPendingPeeks' 1024) while
// a legitimate client keeps completing handshakes.
func TestPeekFloodManySources(t *testing.T) {
	good := newTLSBackend(t, "ok.test")
	p := &Proxy{}
	must(t, p.AddSNIRoute("ok.test", &Pool{Backends: []string{good.addr}}))
	addr := serve(t, p)
	hello := makeHello(t, &tls.Config{ServerName: "slow.test"})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range 40 {
		dripper(t, &wg, stop, fmt.Sprintf("127.0.%d.1", i+1), addr, 32, hello)
	}
	waitFor(t, "a full peek table", func() bool { return p.Stats().Peeking >= defaultPendingPeeks })
	ok := 0
	for i := range 16 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		got, err := tlsVia(ctx, "127.0.0.1", addr, "ok.test", good)
		cancel()
		if got == "ok.test " {
			ok++
		} else {
			t.Logf("legitimate handshake %d: %q, %v", i, got, err)
		}
	}
	s := p.Stats()
	t.Logf("peeking %d, shed %d, rejected %v", s.Peeking, s.Shed, s.Rejected)
	if ok != 16 {
		t.Errorf("%d of 16 legitimate handshakes succeeded during the flood", ok)
	}
	if s.Shed == 0 {
		t.Error("no slow peek was shed")
	}
}

// TestPeekFloodOneNetwork: many addresses of one /24 together get at most
// MaxPeeksPerNetwork peeks; a client of another network is served.
func TestPeekFloodOneNetwork(t *testing.T) {
	good := newTLSBackend(t, "ok.test")
	p := &Proxy{MaxPeeksPerNetwork: 64, MaxPendingPeeks: -1}
	must(t, p.AddSNIRoute("ok.test", &Pool{Backends: []string{good.addr}}))
	addr := serve(t, p)
	hello := makeHello(t, &tls.Config{ServerName: "slow.test"})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range 8 {
		dripper(t, &wg, stop, fmt.Sprintf("127.0.9.%d", i+1), addr, 16, hello)
	}
	waitFor(t, "the network at its cap", func() bool {
		s := p.Stats()
		return s.Peeking == 64 && s.Rejected["limit"] > 0
	})
	if got, err := tlsVia(t.Context(), "127.0.10.1", addr, "ok.test", good); got != "ok.test " {
		t.Errorf("client of another network: %q, %v", got, err)
	}
	if n := p.Stats().Peeking; n > 64+1 {
		t.Errorf("%d peeks with a network cap of 64", n)
	}
}

// TestLimiterNetworks checks the grouping: IPv4 by /24, IPv6 by /64.
func TestLimiterNetworks(t *testing.T) {
	var l limiter
	l.init()
	lim := peekLimits{perSource: 10, perNet: 2}
	for _, tc := range []struct {
		src  string
		want bool
	}{
		{"192.0.2.1", true}, {"192.0.2.2", true}, {"192.0.2.3", false}, {"192.0.3.1", true},
		{"2001:db8::1", true}, {"2001:db8::2", true}, {"2001:db8::1:0:0:3", false}, {"2001:db8:0:1::1", true},
		{"::ffff:192.0.2.9", false}, // mapped: the same /24
	} {
		_, _, ok := l.acquire(nil, netip.MustParseAddr(tc.src), lim, true)
		if ok != tc.want {
			t.Errorf("acquire %s = %v, want %v", tc.src, ok, tc.want)
		}
	}
}

// TestListenAndServeBusyPort: a port held by another listener, with
// SO_REUSEPORT (another proxy started with Listen) or without, makes
// ListenAndServe an error naming the address; before, the SO_REUSEPORT case
// started and the kernel split the connections between the two.
func TestListenAndServeBusyPort(t *testing.T) {
	for _, takeover := range []bool{true, false} {
		var l net.Listener
		var err error
		if takeover {
			l, err = Listen("tcp", "127.0.0.1:0")
		} else {
			l, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		p := &Proxy{}
		errc := make(chan error, 1)
		go func() { errc <- p.ListenAndServe(addr) }()
		select {
		case err = <-errc:
		case <-time.After(5 * time.Second):
			p.Close()
			t.Fatalf("SO_REUSEPORT holder %v: ListenAndServe(%s) is serving on a port another listener holds", takeover, addr)
		}
		l.Close()
		if err == nil || !strings.Contains(err.Error(), "proxy: listen "+addr) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("SO_REUSEPORT holder %v: ListenAndServe(%s) = %v, want an address-in-use error naming it", takeover, addr, err)
		}
	}
}
