package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// ppBackend is a Go backend that parses the PROXY header with go-proxyproto
// and reports it.
type ppResult struct {
	h    *proxyproto.Header
	rest []byte
}

func newPPBackend(t testing.TB) (string, chan ppResult) {
	t.Helper()
	be := newRawBackend(t)
	out := make(chan ppResult, 10)
	go func() {
		for data := range be.got {
			br := bufio.NewReader(newBytesReader(data))
			h, err := proxyproto.Read(br)
			if err != nil {
				h = nil
			}
			rest, _ := io.ReadAll(br)
			out <- ppResult{h, rest}
		}
	}()
	return be.addr, out
}

func TestProxyProtocolToBackend(t *testing.T) {
	for _, v := range []ProxyProtocol{ProxyProtocolV1, ProxyProtocolV2} {
		t.Run(v.String(), func(t *testing.T) {
			addr, got := newPPBackend(t)
			var p Proxy
			must(t, p.AddSNIRoute("pp.test", &Pool{Backends: []string{addr}, ProxyProtocol: v}))
			paddr := serve(t, &p)
			hello := makeHello(t, &tls.Config{ServerName: "pp.test", NextProtos: []string{"h2", "http/1.1"}})
			c, err := net.Dial("tcp", paddr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write(hello)
			c.(*net.TCPConn).CloseWrite()
			var r ppResult
			select {
			case r = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("backend got nothing")
			}
			c.Close()
			if r.h == nil {
				t.Fatal("no PROXY header")
			}
			src, _, _ := r.h.TCPAddrs()
			if src.String() != c.LocalAddr().String() {
				t.Errorf("PROXY source %v, want client %v", src, c.LocalAddr())
			}
			if string(r.rest) != string(hello) {
				t.Errorf("after the header the backend got %d bytes, want the %d-byte hello", len(r.rest), len(hello))
			}
			if v != ProxyProtocolV2 {
				return
			}
			tlvs, _ := r.h.TLVs()
			m := map[proxyproto.PP2Type]string{}
			for _, tlv := range tlvs {
				m[tlv.Type] = string(tlv.Value)
			}
			if m[proxyproto.PP2_TYPE_AUTHORITY] != "pp.test" || m[proxyproto.PP2_TYPE_ALPN] != "h2" || len(m[proxyproto.PP2_TYPE_UNIQUE_ID]) != 16 {
				t.Errorf("TLVs %q", m)
			}
		})
	}
}

func TestInboundProxyHeader(t *testing.T) {
	hello := makeHello(t, &tls.Config{ServerName: "in.test"})
	hdr := func(v byte, src string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
			net.TCPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.1:443")))
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	lan := netip.MustParsePrefix("192.168.0.0/16")
	tests := []struct {
		name    string
		trust   []netip.Prefix
		send    []byte
		wantSrc string // "" means rejected
		reason  Reason
	}{
		{"trusted v2", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, append(hdr(2, "192.168.7.7:5555"), hello...), "192.168.7.7:5555", 0},
		{"trusted v1", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, append(hdr(1, "192.168.7.8:5555"), hello...), "192.168.7.8:5555", 0},
		{"trusted, no header", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, hello, "127.0.0.1", 0},
		{"trusted, ACL on header source", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, append(hdr(2, "203.0.113.1:5555"), hello...), "", ReasonDenied},
		{"untrusted", nil, append(hdr(2, "192.168.7.7:5555"), hello...), "", ReasonBadProxyHeader},
		{"trusted, malformed v1", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, []byte("PROXY TCP4 1.2.3.4 nonsense\r\n"), "", ReasonBadProxyHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, got := newPPBackend(t)
			p := &Proxy{TrustProxyFrom: tt.trust}
			rej := newRejects(p)
			allow := []netip.Prefix{lan, netip.MustParsePrefix("127.0.0.0/8")}
			must(t, p.AddRoute(Route{Protocol: ProtocolTLS, Host: "in.test", Allow: allow,
				Target: &Pool{Backends: []string{addr}, ProxyProtocol: ProxyProtocolV1}}))
			paddr := serve(t, p)
			c, err := net.Dial("tcp", paddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tt.send)
			c.(*net.TCPConn).CloseWrite()
			if tt.wantSrc == "" {
				rej.want(t, tt.reason, 5*time.Second)
				return
			}
			select {
			case r := <-got:
				src, _, _ := r.h.TCPAddrs()
				if want := tt.wantSrc; src.String() != want && src.IP.String() != want {
					t.Errorf("backend saw %v, want %v", src, want)
				}
				if string(r.rest) != string(hello) {
					t.Error("inbound header not stripped or hello changed")
				}
			case r := <-rej.c:
				t.Fatalf("rejected: %v", r)
			case <-time.After(5 * time.Second):
				t.Fatal("nothing reached the backend")
			}
		})
	}
}

func TestLoopGuard(t *testing.T) {
	t.Run("backend is our listener", func(t *testing.T) {
		p := &Proxy{}
		rej := newRejects(p)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		must(t, p.AddSNIRoute("", &Pool{Backends: []string{l.Addr().String()}, HealthCheck: HealthCheck{Interval: -1}}))
		done := make(chan error, 1)
		go func() { done <- p.Serve(l) }()
		t.Cleanup(func() { p.Close(); <-done })
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(makeHello(t, &tls.Config{ServerName: "x.test"}))
		rej.want(t, ReasonBackendDown, 5*time.Second)
		select {
		case r := <-rej.c:
			t.Errorf("second reject %v: the proxy dialed itself", r)
		case <-time.After(100 * time.Millisecond):
		}
	})
	t.Run("our PROXY header comes back", func(t *testing.T) {
		// A forwarder stands for a router or socat that sends the backend
		// connection back to us; it does not touch the bytes.
		p := &Proxy{TrustProxyFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
		rej := newRejects(p)
		paddr := serve(t, p)
		fwd := newForwarder(t, paddr)
		must(t, p.AddSNIRoute("", &Pool{Backends: []string{fwd}, ProxyProtocol: ProxyProtocolV2, HealthCheck: HealthCheck{Interval: -1}}))
		c, err := net.Dial("tcp", paddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(makeHello(t, &tls.Config{ServerName: "x.test"}))
		rej.want(t, ReasonLoop, 5*time.Second)
	})
}

// newForwarder relays every connection to dst.
func newForwarder(t testing.TB, dst string) string {
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
			go func() {
				defer c.Close()
				d, err := net.Dial("tcp", dst)
				if err != nil {
					return
				}
				defer d.Close()
				go io.Copy(d, c)
				io.Copy(c, d)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

func TestLoopGuardDialRegistry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var g loopGuard
	d, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	other, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	k := g.addDial(d)
	if !g.isOurDial(a) {
		t.Error("the accepted end of our own dial is not recognized")
	}
	if g.isOurDial(b) || g.isOurDial(d) {
		t.Error("another connection taken for our dial")
	}
	g.removeDial(k)
	if g.isOurDial(a) {
		t.Error("still registered after removeDial")
	}
}

func TestBuildProxyHeader(t *testing.T) {
	tests := []struct {
		v        ProxyProtocol
		src, dst string
		want     string // v1 text, or "" to check by parsing only
	}{
		{ProxyProtocolV1, "192.0.2.1:1000", "198.51.100.1:443", "PROXY TCP4 192.0.2.1 198.51.100.1 1000 443\r\n"},
		{ProxyProtocolV1, "[::ffff:192.0.2.1]:1000", "198.51.100.1:443", "PROXY TCP4 192.0.2.1 198.51.100.1 1000 443\r\n"},
		{ProxyProtocolV1, "192.0.2.1:1000", "[2001:db8::1]:443", "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1000 443\r\n"},
		{ProxyProtocolV2, "[2001:db8::2]:1000", "[2001:db8::1]:443", ""},
		{ProxyProtocolNone, "192.0.2.1:1000", "198.51.100.1:443", ""},
	}
	for _, tt := range tests {
		b, err := buildProxyHeader(tt.v, mustAP(tt.src), mustAP(tt.dst), "a.test", []string{"h2"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tt.v == ProxyProtocolNone {
			if b != nil {
				t.Errorf("none: %q", b)
			}
			continue
		}
		if tt.want != "" && string(b) != tt.want {
			t.Errorf("%v %s→%s = %q, want %q", tt.v, tt.src, tt.dst, b, tt.want)
		}
		_, s, d, err := parseProxyHeader(b)
		if err != nil || s.Addr().Unmap() != mustAP(tt.src).Addr().Unmap() || s.Port() != 1000 || d.Port() != 443 {
			t.Errorf("%v: round trip %v %v %v", tt.v, s, d, err)
		}
	}
}

// TestIPv6ClientV4Backend: a client on ::1, a backend on 127.0.0.1; the
// PROXY v1 header carries both ends in one family.
func TestIPv6ClientV4Backend(t *testing.T) {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	addr, got := newPPBackend(t)
	var p Proxy
	must(t, p.AddSNIRoute("v6.test", &Pool{Backends: []string{addr}, ProxyProtocol: ProxyProtocolV1}))
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	t.Cleanup(func() { p.Close(); <-done })
	c, err := net.Dial("tcp6", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(makeHello(t, &tls.Config{ServerName: "v6.test"}))
	c.(*net.TCPConn).CloseWrite()
	select {
	case r := <-got:
		src, dst, _ := r.h.TCPAddrs()
		if src.String() != c.LocalAddr().String() || dst.String() != l.Addr().String() {
			t.Errorf("PROXY %v -> %v, want %v -> %v", src, dst, c.LocalAddr(), l.Addr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend got nothing")
	}
}
