package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
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
	for i, name := range []string{"blog.test", "wiki.test"} {
		cert, _ := testCert(t, name)
		ln, err := lab.Listen(natlab.LAN2, "tcp4", ":"+[]string{"9443", "9444"}[i])
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
		backend := netip.AddrPortFrom(lab.Addr(natlab.LAN2), uint16(9443+i)).String()
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
