package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/natlab"
	proxyproto "github.com/pires/go-proxyproto"
)

// TestLabPortForward runs the proxy on LAN1 behind a real kernel NAT whose
// port 443 is forwarded to it, with TLS backends on LAN2. A client on the
// internet reaches each backend by name through the public address, the
// backend sees the client's real address in the PROXY header, and with
// hairpinning a LAN client uses the same public name.
func TestLabPortForward(t *testing.T) {
	lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted, Hairpin: true,
		Forwards: []natlab.Forward{{Proto: "tcp", Port: 443, To: natlab.LAN1, ToPort: 8443}}})

	dialLAN1 := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.Dial(ctx, natlab.LAN1, network, addr)
	}
	p := &Proxy{}
	p.SetPublicAddrs(lab.PublicAddr())
	for _, name := range []string{"blog.test", "wiki.test"} {
		cert, _ := testCert(t, name)
		ln, err := lab.Listen(natlab.LAN2, "tcp4", lab.Addr(natlab.LAN2).String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		pl := &proxyproto.Listener{Listener: ln} // REQUIRE: the header must come
		tl := tls.NewListener(pl, &tls.Config{Certificates: []tls.Certificate{cert}})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					io.WriteString(c, name+" "+c.RemoteAddr().String())
				}
				c.Close()
			}
		})
		t.Cleanup(func() { tl.Close(); wg.Wait() })
		backend := ln.Addr().String()
		must(t, p.AddSNIRoute(name, &Pool{Backends: []string{backend}, ProxyProtocol: ProxyProtocolV2, DialContext: dialLAN1}))
	}
	// A route to our own public address must never be dialed.
	must(t, p.AddSNIRoute("loop.test", &Pool{Backends: []string{netip.AddrPortFrom(lab.PublicAddr(), 443).String()},
		DialContext: dialLAN1, HealthCheck: HealthCheck{Interval: -1}}))
	l, err := lab.Listen(natlab.LAN1, "tcp4", ":8443")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	t.Cleanup(func() { p.Close(); <-done })

	pub := netip.AddrPortFrom(lab.PublicAddr(), 443).String()
	get := func(from natlab.Host, name string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		c, err := lab.Dial(ctx, from, "tcp4", pub)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		b, err := io.ReadAll(tc)
		return string(b), err
	}
	for _, tt := range []struct {
		from natlab.Host
		name string
		src  netip.Addr // the address the backend must see
	}{
		{natlab.Peer, "blog.test", lab.Addr(natlab.Peer)},
		{natlab.Peer, "wiki.test", lab.Addr(natlab.Peer)},
		{natlab.LAN2, "blog.test", lab.PublicAddr()}, // hairpinned: the router rewrites the source
	} {
		got, err := get(tt.from, tt.name)
		if err != nil {
			t.Errorf("%v -> %s: %v", tt.from, tt.name, err)
			continue
		}
		name, addr, _ := strings.Cut(got, " ")
		ap, _ := netip.ParseAddrPort(addr)
		if name != tt.name || ap.Addr() != tt.src {
			t.Errorf("%v -> %s: backend %q saw %v, want %s from %v", tt.from, tt.name, name, ap, tt.name, tt.src)
		}
	}
	if got, err := get(natlab.Peer, "loop.test"); err == nil && got != "" {
		t.Errorf("loop.test answered %q", got)
	}
	if n := p.Stats().Rejected["backend down"]; n != 1 {
		t.Errorf("loop route: %d backend-down rejects, want 1 (refused before dialing)", n)
	}
}

// TestLabTakeoverUnderLoad hands the port from one proxy to another (as a
// restarted process would, both on SO_REUSEPORT listeners) while clients
// connect without pause, in a namespace of its own with
// net.ipv4.tcp_migrate_req=1 (Linux 5.14+), which moves connections still
// queued on the closing listener to the new one. No client may be refused
// or reset.
func TestLabTakeoverUnderLoad(t *testing.T) {
	lab := natlab.New(t, natlab.Config{Kind: natlab.NoNAT})
	if out, err := lab.Command(natlab.LAN1, "sysctl", "-w", "net.ipv4.tcp_migrate_req=1").CombinedOutput(); err != nil {
		t.Skipf("tcp_migrate_req not available: %v %s", err, out)
	}
	host := lab.Addr(natlab.LAN1)
	be, err := lab.Listen(natlab.LAN1, "tcp4", host.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := testCert(t, "tk.test")
	tl := tls.NewListener(be, &tls.Config{Certificates: []tls.Certificate{cert}})
	var bwg sync.WaitGroup
	bwg.Go(func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			bwg.Go(func() {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "ok")
				c.Close()
			})
		}
	})
	t.Cleanup(func() { tl.Close(); bwg.Wait() })

	listen := func(addr string) net.Listener {
		var l net.Listener
		must(t, lab.Do(natlab.LAN1, func() (err error) {
			l, err = Listen("tcp4", addr)
			return err
		}))
		return l
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.Dial(ctx, natlab.LAN1, network, addr)
	}
	newProxy := func(l net.Listener) (*Proxy, chan error) {
		p := &Proxy{MaxPeeksPerSource: -1}
		must(t, p.AddSNIRoute("tk.test", &Pool{Backends: []string{be.Addr().String()}, DialContext: dial}))
		done := make(chan error, 1)
		go func() { done <- p.Serve(l) }()
		return p, done
	}
	l1 := listen(host.String() + ":0")
	addr := l1.Addr().String()
	p1, done1 := newProxy(l1)

	ctx, cancel := context.WithCancel(t.Context())
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
				c, err := lab.Dial(dctx, natlab.LAN1, "tcp4", addr)
				dcancel()
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						t.Logf("dial: %v", err)
					}
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				b, err := io.ReadAll(tls.Client(c, &tls.Config{ServerName: "tk.test", InsecureSkipVerify: true}))
				c.Close()
				if err != nil || string(b) != "ok" {
					failed.Add(1)
					t.Logf("connection: %q %v", b, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // load on the old proxy alone
	p2, done2 := newProxy(listen(addr))
	time.Sleep(300 * time.Millisecond) // both accept
	sctx, scancel := context.WithTimeout(t.Context(), 5*time.Second)
	err = p1.Shutdown(sctx)
	scancel()
	if err != nil {
		t.Errorf("old proxy Shutdown: %v", err)
	}
	<-done1
	time.Sleep(300 * time.Millisecond) // the new one alone
	cancel()
	wg.Wait()
	p2.Close()
	<-done2
	t.Logf("takeover: %d connections ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("%d connections failed during the takeover (%d ok)", failed.Load(), ok.Load())
	}
}
