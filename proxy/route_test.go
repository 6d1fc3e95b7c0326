package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

type namedTarget string

func (namedTarget) HandleConn(_ context.Context, c *Conn) { c.Close() }

func TestRouteMatch(t *testing.T) {
	lan := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}
	routes := []Route{
		{Protocol: ProtocolTLS, Host: "blog.example.com", Target: namedTarget("blog")},
		{Protocol: ProtocolTLS, Host: "blog.example.com", ALPN: []string{"acme-tls/1"}, Target: namedTarget("acme")},
		{Protocol: ProtocolTLS, Host: "*.example.com", Target: namedTarget("wild")},
		{Protocol: ProtocolTLS, Host: "*.deep.example.com", Target: namedTarget("deep")},
		{Protocol: ProtocolTLS, Host: "bücher.example", Target: namedTarget("idn")},
		{Protocol: ProtocolTLS, Host: "admin.example.com", Allow: lan, Target: namedTarget("admin-lan")},
		{Protocol: ProtocolTLS, Host: "db.example.com", Allow: lan, Target: namedTarget("db")},
		{Protocol: ProtocolTLS, Host: "admin.example.com", Target: namedTarget("admin-public")},
		{Protocol: ProtocolTLS, Host: "pred.test", Match: func(h *Hello) bool { return h.Source.Port() == 1 }, Target: namedTarget("pred")},
		{Protocol: ProtocolHTTP, Host: "blog.example.com", Target: namedTarget("blog-http")},
		{Protocol: ProtocolHTTP, Host: "", Target: namedTarget("http-default")},
	}
	tab, err := newTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	lanSrc := netip.MustParseAddrPort("192.168.1.5:1000")
	wan := netip.MustParseAddrPort("203.0.113.9:1000")
	tests := []struct {
		name   string
		h      Hello
		want   string
		reason Reason
	}{
		{"exact", Hello{Protocol: ProtocolTLS, ServerName: "blog.example.com", Source: wan}, "blog", 0},
		{"alpn wins at same host", Hello{Protocol: ProtocolTLS, ServerName: "blog.example.com", ALPN: []string{"h2", "acme-tls/1"}, Source: wan}, "acme", 0},
		{"other alpn", Hello{Protocol: ProtocolTLS, ServerName: "blog.example.com", ALPN: []string{"h2"}, Source: wan}, "blog", 0},
		{"wildcard one label", Hello{Protocol: ProtocolTLS, ServerName: "www.example.com", Source: wan}, "wild", 0},
		{"wildcard deeper", Hello{Protocol: ProtocolTLS, ServerName: "a.b.example.com", Source: wan}, "wild", 0},
		{"longest wildcard", Hello{Protocol: ProtocolTLS, ServerName: "x.deep.example.com", Source: wan}, "deep", 0},
		{"wildcard not apex", Hello{Protocol: ProtocolTLS, ServerName: "example.com", Source: wan}, "", ReasonNoRoute},
		{"idn punycode", Hello{Protocol: ProtocolTLS, ServerName: "xn--bcher-kva.example", Source: wan}, "idn", 0},
		{"acl lan", Hello{Protocol: ProtocolTLS, ServerName: "admin.example.com", Source: lanSrc}, "admin-lan", 0},
		{"acl falls to same host", Hello{Protocol: ProtocolTLS, ServerName: "admin.example.com", Source: wan}, "admin-public", 0},
		{"acl denied, not to wildcard", Hello{Protocol: ProtocolTLS, ServerName: "db.example.com", Source: wan}, "", ReasonDenied},
		{"acl mapped v4", Hello{Protocol: ProtocolTLS, ServerName: "db.example.com", Source: netip.MustParseAddrPort("[::ffff:192.168.1.7]:5")}, "db", 0},
		{"predicate", Hello{Protocol: ProtocolTLS, ServerName: "pred.test", Source: netip.MustParseAddrPort("1.1.1.1:1")}, "pred", 0},
		{"predicate false", Hello{Protocol: ProtocolTLS, ServerName: "pred.test", Source: wan}, "", ReasonNoRoute},
		{"no sni no default", Hello{Protocol: ProtocolTLS, Source: wan}, "", ReasonNoSNI},
		{"unknown name", Hello{Protocol: ProtocolTLS, ServerName: "nope.test", Source: wan}, "", ReasonNoRoute},
		{"http exact", Hello{Protocol: ProtocolHTTP, ServerName: "blog.example.com", Source: wan}, "blog-http", 0},
		{"http default", Hello{Protocol: ProtocolHTTP, ServerName: "x.test", Source: wan}, "http-default", 0},
		{"http no host default", Hello{Protocol: ProtocolHTTP, Source: wan}, "http-default", 0},
		{"unknown protocol", Hello{ServerName: "blog.example.com"}, "", ReasonNoRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, reason := tab.match(&tt.h)
			got := ""
			if r != nil {
				got = string(r.Target.(namedTarget))
			}
			if got != tt.want || reason != tt.reason {
				t.Errorf("match = %q, %v; want %q, %v", got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestRouteValidation(t *testing.T) {
	tgt := namedTarget("x")
	bad := []Route{
		{Host: "a.test", Target: tgt},
		{Protocol: ProtocolTLS, Host: "a.test"},
		{Protocol: ProtocolTLS, Host: "a*.test", Target: tgt},
		{Protocol: ProtocolTLS, Host: "*.", Target: tgt},
		{Protocol: ProtocolTLS, Host: "a..test", Target: tgt},
		{Protocol: ProtocolTLS, Host: "a b.test", Target: tgt},
		{Protocol: ProtocolHTTP, Host: "a.test", ALPN: []string{"h2"}, Target: tgt},
		{Protocol: ProtocolTLS, Host: "a.test", Allow: []netip.Prefix{{}}, Target: tgt},
	}
	for i, r := range bad {
		if _, err := newTable([]Route{r}); err == nil {
			t.Errorf("route %d %+v: no error", i, r)
		}
	}
	var p Proxy
	must(t, p.AddSNIRoute("good.test", tgt))
	if err := p.SetRoutes(append(p.Routes(), bad[0])); err == nil {
		t.Fatal("SetRoutes accepted a bad route")
	}
	if n := len(p.Routes()); n != 1 {
		t.Errorf("after a failed SetRoutes there are %d routes, want the old 1", n)
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Example.COM.", "example.com"},
		{"BÜCHER.example", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"_acme.example", "_acme.example"},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeName(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"a..b", "a/b", string(make([]byte, 300))} {
		if _, err := NormalizeName(in); err == nil {
			t.Errorf("NormalizeName(%q): no error", in)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger used from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDenialLogged(t *testing.T) {
	var logs syncBuffer
	p := &Proxy{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	rej := newRejects(p)
	must(t, p.AddRoute(Route{Protocol: ProtocolHTTP, Host: "db.test", Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Target: namedTarget("db")}))
	addr := serve(t, p)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: db.test\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("response %v, %v; want 403", resp, err)
	}
	rej.want(t, ReasonDenied, 5*time.Second)
	if l := logs.String(); !strings.Contains(l, "reason=denied") || !strings.Contains(l, "src="+c.LocalAddr().String()) {
		t.Errorf("denial log %q lacks the reason or the source %v", l, c.LocalAddr())
	}
}

// TestRouteDuplicates: a route that an earlier one for the same name always
// wins over is dead, and an error names both (before, the second was
// silently never used). Routes that still get connections are not.
func TestRouteDuplicates(t *testing.T) {
	tgt := namedTarget("x")
	lan := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}
	tls := func(host string, alpn ...string) Route {
		return Route{Protocol: ProtocolTLS, Host: host, ALPN: alpn, Target: tgt}
	}
	for _, c := range []struct {
		name   string
		routes []Route
		dup    string // "" means valid; else the error names this
	}{
		{"case and trailing dot", []Route{tls("blog.example.com"), tls("BLOG.example.com.")}, `route 1 ("BLOG.example.com."): duplicate of route 0 ("blog.example.com")`},
		{"punycode and unicode", []Route{tls("bücher.example"), tls("xn--bcher-kva.example")}, `route 1 ("xn--bcher-kva.example"): duplicate of route 0`},
		{"wildcard twice", []Route{tls("*.example.com"), tls("*.EXAMPLE.com")}, `route 1 ("*.EXAMPLE.com"): duplicate of route 0`},
		{"default twice", []Route{tls(""), tls("*")}, `route 1 ("*"): duplicate of route 0 ("")`},
		{"same ALPN", []Route{tls("a.test", "acme-tls/1"), tls("a.test", "acme-tls/1")}, "route 1"},
		{"ALPN subset", []Route{tls("a.test", "h2", "http/1.1"), tls("a.test", "h2")}, "route 1"},
		{"HTTP twice", []Route{{Protocol: ProtocolHTTP, Host: "a.test", Target: tgt}, {Protocol: ProtocolHTTP, Host: "A.test", Target: tgt}}, "route 1"},
		{"third of three", []Route{tls("a.test"), tls("b.test"), tls("a.test")}, `route 2 ("a.test"): duplicate of route 0`},
		{"ACL first, then the rest", []Route{{Protocol: ProtocolTLS, Host: "a.test", Allow: lan, Target: tgt}, tls("a.test")}, ""},
		{"predicate first", []Route{{Protocol: ProtocolTLS, Host: "a.test", Match: func(*Hello) bool { return false }, Target: tgt}, tls("a.test")}, ""},
		{"ALPN route and plain route", []Route{tls("a.test"), tls("a.test", "acme-tls/1")}, ""},
		{"other ALPN", []Route{tls("a.test", "h2"), tls("a.test", "acme-tls/1")}, ""},
		{"TLS and HTTP", []Route{tls("a.test"), {Protocol: ProtocolHTTP, Host: "a.test", Target: tgt}}, ""},
		{"wildcard and exact", []Route{tls("*.example.com"), tls("www.example.com")}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := newTable(c.routes)
			if c.dup == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.dup) || !strings.Contains(err.Error(), "duplicate") {
				t.Fatalf("error %v, want one naming %s", err, c.dup)
			}
		})
	}
	// AddRoute refuses the duplicate and keeps the table as it was.
	p := &Proxy{}
	must(t, p.AddSNIRoute("blog.example.com", tgt))
	if err := p.AddSNIRoute("Blog.Example.Com.", tgt); err == nil || !strings.Contains(err.Error(), "duplicate of route 0") {
		t.Errorf("AddRoute of a duplicate: %v", err)
	}
	if n := len(p.Routes()); n != 1 {
		t.Errorf("%d routes after the refused duplicate, want 1", n)
	}
}
