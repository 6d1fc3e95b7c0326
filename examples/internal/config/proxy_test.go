package config

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/proxy"
)

const proxyExample = `
proxy:
  tls: [":443", "[::]:8443"]
  http: [":80"]
  trustProxyFrom: ["192.168.1.0/24", "10.0.0.1"]
  peekTimeout: 3s
  idleTimeout: 30m
  halfCloseTimeout: "off"
  userTimeout: 2m
  httpIdleTimeout: 30s
  maxConnsPerSource: 8
  maxPeeksPerNetwork: -1
  routes:
    - host: blog.example.com
      backends: ["192.168.1.20:443", "192.168.1.21:443"]
      http: ["192.168.1.20:80"]
      proxyProtocol: v2
      allow: ["0.0.0.0/0", "::/0"]
      balance: roundrobin
      healthCheck: {interval: 10s, tls: true, rise: 1}
    - host: blog.example.com
      alpn: ["acme-tls/1"]
      backends: ["127.0.0.1:9443"]
      allow: ["127.0.0.1/32"]
    - host: "*.example.com"
      backends: ["nas.lan:443"]
      healthCheck: {interval: "off"}
      allow: ["192.168.1.0/24"]
    - host: ""
      http: ["192.168.1.30:80"]
      allow: []
`

func TestProxyParseAndBuild(t *testing.T) {
	f, err := Parse([]byte(proxyExample))
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.Proxy.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.PeekTimeout != 3*time.Second || p.HTTPIdleTimeout != 30*time.Second || p.UserTimeout != 2*time.Minute ||
		p.IdleTimeout != 30*time.Minute || p.HalfCloseTimeout >= 0 || p.MaxConnsPerSource != 8 || p.MaxPeeksPerNetwork != -1 ||
		len(p.TrustProxyFrom) != 2 ||
		p.TrustProxyFrom[1] != netip.MustParsePrefix("10.0.0.1/32") {
		t.Errorf("proxy %+v", p)
	}
	routes := p.Routes()
	if len(routes) != 5 {
		t.Fatalf("%d routes, want 5 (blog tls+http, acme, wildcard, default http)", len(routes))
	}
	blog := routes[0].Target.(*proxy.Pool)
	if routes[0].Protocol != proxy.ProtocolTLS || blog.ProxyProtocol != proxy.ProxyProtocolV2 ||
		blog.Balance != proxy.BalanceRoundRobin || blog.HealthCheck.ServerName != "blog.example.com" ||
		!blog.HealthCheck.TLS || blog.HealthCheck.Interval != 10*time.Second || len(routes[0].Allow) != 2 {
		t.Errorf("blog route %+v pool %+v", routes[0], blog)
	}
	if h := routes[1].Target.(*proxy.Pool); routes[1].Protocol != proxy.ProtocolHTTP || h.HealthCheck.TLS || h.Backends[0] != "192.168.1.20:80" {
		t.Errorf("blog http route %+v", routes[1])
	}
	if routes[2].ALPN[0] != "acme-tls/1" {
		t.Errorf("acme route %+v", routes[2])
	}
	if routes[3].Target.(*proxy.Pool).HealthCheck.Interval >= 0 {
		t.Error(`interval "off" not negative`)
	}

	// Reload: a new file's routes are swapped in; a bad one leaves the old.
	f2, err := Parse([]byte("proxy:\n  routes:\n    - host: new.example.com\n      backends: [\"10.0.0.9:443\"]\n      allow: [\"0.0.0.0/0\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Proxy.Apply(p, nil); err != nil || len(p.Routes()) != 1 {
		t.Errorf("Apply: %v, %d routes", err, len(p.Routes()))
	}
}

func TestProxyErrors(t *testing.T) {
	tests := []struct {
		yaml string
		want string // substring of the error
	}{
		{"proxy:\n  tls: [\"443\"]\n", `line 2: proxy.tls[0]: "443": want [ip]:port`},
		{"proxy:\n  http: [\"nothost:80\"]\n", `line 2: proxy.http[0]`},
		{"proxy:\n  trustProxyFrom: [\"192.168.1.0/33\"]\n", `line 2: proxy.trustProxyFrom[0]`},
		{"proxy:\n  peekTimeout: soon\n", `line 2: proxy.peekTimeout: "soon"`},
		{"proxy:\n  routes:\n    - host: a.test\n", `line 3: proxy.routes[0]: a route needs backends`},
		{"proxy:\n  routes:\n    - host: a*.test\n      backends: [\"1.2.3.4:443\"]\n", `line 3: proxy.routes[0].host: "a*.test"`},
		{"proxy:\n  routes:\n    - host: a.test\n      backends: [\"1.2.3.4\"]\n", `line 4: proxy.routes[0].backends[0]: "1.2.3.4"`},
		{"proxy:\n  routes:\n    - host: a.test\n      backends: [\"1.2.3.4:443\"]\n      proxyProtocol: v3\n", `line 5: proxy.routes[0].proxyProtocol: "v3": want none, v1 or v2`},
		{"proxy:\n  routes:\n    - host: a.test\n      backends: [\"1.2.3.4:443\"]\n      balance: random\n", `line 5: proxy.routes[0].balance`},
		{"proxy:\n  routes:\n    - host: a.test\n      backends: [\"1.2.3.4:443\"]\n      allow: [\"lan\"]\n", `line 5: proxy.routes[0].allow[0]: "lan"`},
		{"proxy:\n  routes:\n    - host: a.test\n      backends: [\"1.2.3.4:443\"]\n", `line 3: proxy.routes[0].allow: missing`},
		{"proxy:\n  routes:\n    - host: a.test\n      http: [\"1.2.3.4:80\"]\n      alpn: [h2]\n", `line 5: proxy.routes[0].alpn`},
		{"proxy:\n  routes:\n    - host: a.test\n      backends: [\"1.2.3.4:443\"]\n      healthCheck: {interval: 0s}\n", `line 5: proxy.routes[0].healthCheck.interval`},
		{"proxy:\n  routes:\n    - host: a.test\n      backends: [\"1.2.3.4:443\"]\n      bogus: 1\n", `line 5: proxy.routes[0].bogus: unknown key`},
		{"proxy:\n  listen: [\":443\"]\n", `line 2: proxy.listen: unknown key`},
		{"proxy:\n  maxConnsPerSource: -2\n", `line 2: proxy.maxConnsPerSource: -2: want a positive number, 0 for the default or -1 for no limit`},
		{"proxy:\n  maxPeeksPerNetwork: -5\n", `line 2: proxy.maxPeeksPerNetwork: -5: want a positive number`},
		{"proxy:\n  maxPeeksPerNetwork: many\n", `line 2: proxy.maxPeeksPerNetwork`},
		{"proxy:\n  idleTimeout: 0s\n", `line 2: proxy.idleTimeout: "0s": want a positive duration such as 5s or 1h, "off"`},
		{"proxy:\n  halfCloseTimeout: soon\n", `line 2: proxy.halfCloseTimeout: "soon"`},
		{"proxy:\n  userTimeout: \"off\"\n", `line 2: proxy.userTimeout: "off": cannot be switched off`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tt.yaml, err, tt.want)
		}
	}
}

// "allow: []" allows no one: the route exists (a less specific route does
// not take its clients) but every client is denied.
func TestProxyAllowEmptyDeniesEveryone(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	f, err := Parse([]byte("proxy:\n  routes:\n    - host: \"\"\n      http: [\"" + backend.Addr().String() + "\"]\n      allow: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.Proxy.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	defer func() {
		p.Close()
		<-served
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 403") {
		t.Fatalf("got %q, %v; want 403 Forbidden", line, err)
	}
}

// TestProxyDuplicateRoutes: two routes for one name after normalisation are
// an error (the second would never be used); another protocol or ALPN set
// is a different route.
func TestProxyDuplicateRoutes(t *testing.T) {
	const head = "proxy:\n  routes:\n"
	route := func(host, extra string) string {
		return "    - host: \"" + host + "\"\n      backends: [\"192.0.2.1:443\"]\n      allow: [\"0.0.0.0/0\"]\n" + extra
	}
	_, err := Parse([]byte(head + route("blog.example.com", "") + route("BLOG.example.com.", "")))
	if err == nil || !strings.Contains(err.Error(), "line 6: proxy.routes[1].host: \"BLOG.example.com.\": the same tls route as proxy.routes[0] (line 3)") {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := Parse([]byte(head + route("*.Example.com", "") + route("*.example.com.", ""))); err == nil {
		t.Fatal("duplicate wildcard accepted")
	}
	for _, ok := range []string{
		route("blog.example.com", "") + route("blog.example.com", "      alpn: [\"acme-tls/1\"]\n"),
		route("blog.example.com", "") + "    - host: blog.example.com\n      http: [\"192.0.2.1:80\"]\n      allow: []\n",
	} {
		if _, err := Parse([]byte(head + ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}
