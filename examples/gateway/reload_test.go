package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/relay"
	"github.com/miekg/dns"
)

// TestReloadAppliesDNSSettingsLive: settings other than views (here the
// upstreams and the rate limit) apply on SIGHUP's path without a restart,
// on the same sockets, and the counters carry over.
func TestReloadAppliesDNSSettingsLive(t *testing.T) {
	base := string(loopbackConfig(t))
	cfg, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	gw, err := start(t.Context(), cfg, config.Log{}.Logger(&syncWriter{w: &logs}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.shutdown(ctx)
	})
	dnsAddr := gw.dnsAddrs[0].String()
	if _, rcode := query(t, dnsAddr, "127.0.0.1", "www.example.org"); rcode != dns.RcodeServerFailure {
		t.Fatalf("recursion with no upstream: rcode %s, want SERVFAIL", dns.RcodeToString[rcode])
	}
	before := gw.dns.Stats()

	up := proctest.FakeUpstream(t)
	next := strings.Replace(base, "upstreams: []", `upstreams: ["`+up+`"]`, 1)
	next = strings.Replace(next, "  # rateLimit:", "  rateLimit: {perSecond: 1, burst: 1, slip: -1}\n  #", 1)
	ncfg, err := config.Parse([]byte(next))
	if err != nil {
		t.Fatal(err)
	}
	restart, err := gw.reload(ncfg)
	if err != nil || len(restart) != 0 {
		t.Fatalf("reload: %v, restart %v", err, restart)
	}
	// dns.upstreams: the new upstream answers.
	if got, _ := query(t, dnsAddr, "127.0.0.1", "www.example.org"); len(got) != 1 || got[0] != "192.0.2.99" {
		t.Fatalf("after adding an upstream: %v, want [192.0.2.99]", got)
	}
	// dns.rateLimit: one answer a second now for the outside view.
	c := &dns.Client{Timeout: 300 * time.Millisecond, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 300 * time.Millisecond}}
	answered := 0
	for range 10 {
		m := new(dns.Msg)
		m.SetQuestion("blog.example.com.", dns.TypeA)
		if _, _, err := c.Exchange(m, dnsAddr); err == nil {
			answered++
		}
	}
	if answered > 3 {
		t.Errorf("%d of 10 answered after rateLimit perSecond 1 burst 1", answered)
	}
	after := gw.dns.Stats()
	if after.RateLimited == 0 {
		t.Error("no query counted as rate limited")
	}
	if after.Queries["inside"]["SERVFAIL"] < before.Queries["inside"]["SERVFAIL"] {
		t.Error("counters went backwards across the reload")
	}
}

// TestReloadNamesRestartKeys: a change that waits for a restart is named by
// its key path, and the old value stays in force; a new relay secret, made
// in the same reload, applies at once.
func TestReloadNamesRestartKeys(t *testing.T) {
	base := string(loopbackConfig(t))
	gw := startGateway(t, base)
	next := strings.Replace(base, `secret: "change-me"`, `secret: "other"`, 1)
	next = strings.Replace(next, `realm: example.com`, `realm: example.org`, 1)
	ncfg, err := config.Parse([]byte(next))
	if err != nil {
		t.Fatal(err)
	}
	restart, err := gw.reload(ncfg)
	if err != nil || strings.Join(restart, ",") != "relay.realm" {
		t.Fatalf("reload: %v, restart %v, want [relay.realm]", err, restart)
	}
	name, pass, err := gw.relay.Credentials("demo", time.Hour)
	if err != nil || pass != relay.RESTPassword("other", name) {
		t.Errorf("after the reload the relay does not sign with the new secret (err %v)", err)
	}
}

func TestHelpExitsZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	out := stdout.String()
	if !strings.HasPrefix(out, description+"\n") || !strings.Contains(out, "-config") || !strings.Contains(out, "-shutdown-timeout") {
		t.Fatalf("-h printed %q", out)
	}
}

// TestStartFailsOnBusyPort: a part that cannot serve fails the start with
// the reason and status 1 (it used to log "gateway ready" and run without it).
func TestStartFailsOnBusyPort(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data := string(loopbackConfig(t))
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	data = strings.Replace(data, `"`+cfg.Relay.Listen[0]+`"`, `"`+busy.LocalAddr().String()+`"`, 1)
	var stdout, stderr bytes.Buffer
	code := run([]string{"-config", writeConfig(t, []byte(data))}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "gateway: relay: listen udp "+busy.LocalAddr().String()) ||
		strings.Contains(stderr.String(), "gateway ready") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

// TestCheckLoadsFiles: -check reads the certificate and zone files a start
// would, and refuses proxy.tls and proxy.http on one address.
func TestCheckLoadsFiles(t *testing.T) {
	base := string(defaultConfig)
	for name, tt := range map[string]struct{ edit, want string }{
		"missing relay certificate": {"  relayPorts:", "relay.tls: open /nonexistent/cert.pem"},
		"missing zone file":         {"  views:\n", "dns.views[0].zoneFiles[0].path: \"/nonexistent/zone\""},
		"one address twice":         {"  http: [\"127.0.0.1:8080\"]", "proxy.http[0]: \"127.0.0.1:8443\": tcp port 8443 is already used by proxy.tls[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			var data string
			switch name {
			case "missing relay certificate":
				data = strings.Replace(base, tt.edit, "  tlsListen: [\"127.0.0.1:5349\"]\n  tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n"+tt.edit, 1)
			case "missing zone file":
				data = strings.Replace(base, "      recursion: true\n", "      recursion: true\n      zoneFiles: [{origin: example.net, path: /nonexistent/zone}]\n", 1)
			default:
				data = strings.Replace(base, tt.edit, `  http: ["127.0.0.1:8443"]`, 1)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"-check", "-config", writeConfig(t, []byte(data))}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q, want %q", code, stderr.String(), tt.want)
			}
		})
	}
}

// TestReloadRelayPublic: relay.public applies to new allocations on reload,
// as in turnserver: a fixed address replaces the probed one, and "{public}"
// brings the probed one back.
func TestReloadRelayPublic(t *testing.T) {
	base := string(loopbackConfig(t))
	gw := startGateway(t, base)
	if got := gw.relay.PublicAddr().String(); got != "203.0.113.1" {
		t.Fatalf("relay public %s at start, want nat.public 203.0.113.1", got)
	}
	for _, tt := range []struct{ public, want string }{{`"198.51.100.7"`, "198.51.100.7"}, {`"{public}"`, "203.0.113.1"}} {
		next := strings.Replace(base, `public: "{public}"`, "public: "+tt.public, 1)
		ncfg, err := config.Parse([]byte(next))
		if err != nil {
			t.Fatal(err)
		}
		restart, err := gw.reload(ncfg)
		if err != nil || len(restart) != 0 {
			t.Fatalf("reload relay.public %s: %v, restart %v", tt.public, err, restart)
		}
		if got := gw.relay.PublicAddr().String(); got != tt.want {
			t.Errorf("relay.public %s: advertised %s, want %s", tt.public, got, tt.want)
		}
	}
	// A probe result after the reload to "{public}" reaches the relay again.
	gw.setPublic(netip.MustParseAddr("203.0.113.9"))
	if got := gw.relay.PublicAddr().String(); got != "203.0.113.9" {
		t.Errorf("after a new probed address: relay advertises %s", got)
	}
}

// silentBackend accepts TCP connections, reads what comes, and never
// answers or closes (until the test ends): a backend that holds a
// connection open.
func silentBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// clientHello returns the bytes of a TLS ClientHello for name, as crypto/tls
// writes it.
func clientHello(t *testing.T, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
		a.Close()
	}()
	buf := make([]byte, 16<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// closedWithin reports whether the proxy closes c (a read returns EOF or a
// reset) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// tryTLS completes a TLS handshake for name through the proxy; the
// connection stays open until the test ends.
func tryTLS(t *testing.T, proxyAddr, name string) (net.Conn, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// waitGauge polls the Prometheus endpoint until the metric name satisfies ok.
func waitGauge(t *testing.T, url, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last string
	for time.Now().Before(deadline) {
		body := get(t, url)
		for _, line := range strings.Split(body, "\n") {
			if v, found := strings.CutPrefix(line, name+" "); found {
				last = v
				var f float64
				if _, err := fmt.Sscan(v, &f); err == nil && ok(f) {
					return
				}
			}
		}
		<-tick.C
	}
	t.Fatalf("%s never reached the wanted value (last %q)", name, last)
}

// TestReloadNewKeys runs the binary and, for each key the configuration
// layer gained (dns.forwardDoHCanary, dns.maxTCPConnsPerNetwork,
// proxy.maxConnsPerSource, proxy.maxPeeksPerNetwork, proxy.idleTimeout,
// proxy.halfCloseTimeout), changes it, sends SIGHUP and observes the new
// behaviour over the network without a restart.
func TestReloadNewKeys(t *testing.T) {
	bin := gatewayBin.Path(t)
	base := string(loopbackConfig(t))
	base = strings.Replace(base, "upstreams: []", `upstreams: ["`+proctest.FakeUpstream(t)+`"]`, 1)
	base = strings.Replace(base, "  routes:\n", "  routes:\n    - host: silent.example.com\n      backends: [\""+silentBackend(t)+"\"]\n      allow: [\"127.0.0.0/8\"]\n", 1)
	cfg, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	dnsAddr, tlsAddr := cfg.DNS.Listen[0], cfg.Proxy.TLS[0]
	metricsURL := "http://" + cfg.Metrics + "/metrics"
	path := writeConfig(t, []byte(base))
	p := proctest.Start(t, exec.Command(bin, "-config", path))
	n := p.WaitFor(t, 0, "gateway ready", 20*time.Second)
	// reload writes base with one edit (after old) and sends SIGHUP.
	reload := func(old, new string) {
		t.Helper()
		next := strings.Replace(base, old, new, 1)
		if next == base {
			t.Fatalf("%q is not in the configuration", old)
		}
		if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
			t.Fatal(err)
		}
		p.Signal(t, syscall.SIGHUP)
		n = p.WaitFor(t, n, "configuration reloaded", 10*time.Second)
		if strings.Contains(p.Output(), "take effect at the next restart") {
			t.Fatalf("a key waits for a restart:\n%s", p.Output())
		}
	}
	tcpQuery := func(c net.Conn) error {
		m := new(dns.Msg)
		m.SetQuestion("blog.example.com.", dns.TypeA)
		dc := &dns.Conn{Conn: c}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if err := dc.WriteMsg(m); err != nil {
			return err
		}
		_, err := dc.ReadMsg()
		return err
	}
	const dnsHead = "dns:\n"

	t.Run("dns.forwardDoHCanary", func(t *testing.T) {
		if _, rcode := query(t, dnsAddr, "127.0.0.1", "use-application-dns.net"); rcode != dns.RcodeNameError {
			t.Fatalf("canary by default: %s, want NXDOMAIN", dns.RcodeToString[rcode])
		}
		reload(dnsHead, dnsHead+"  forwardDoHCanary: true\n")
		if got, _ := query(t, dnsAddr, "127.0.0.1", "use-application-dns.net"); strings.Join(got, ",") != "192.0.2.99" {
			t.Fatalf("canary with forwardDoHCanary: %v, want the upstream's 192.0.2.99", got)
		}
	})
	t.Run("dns.maxTCPConnsPerNetwork", func(t *testing.T) {
		reload(dnsHead, dnsHead+"  maxTCPConnsPerNetwork: 1\n")
		first, err := net.Dial("tcp", dnsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		if err := tcpQuery(first); err != nil {
			t.Fatalf("first TCP connection: %v", err)
		}
		second, err := net.Dial("tcp", dnsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		if err := tcpQuery(second); err == nil {
			t.Fatal("a second TCP connection from 127.0.0.0/24 was answered with maxTCPConnsPerNetwork 1")
		}
		if err := tcpQuery(first); err != nil {
			t.Fatalf("the first connection after the second was refused: %v", err)
		}
	})
	t.Run("proxy.maxConnsPerSource", func(t *testing.T) {
		reload("  routes:\n", "  maxConnsPerSource: 1\n  routes:\n")
		held, err := tryTLS(t, tlsAddr, "blog.example.com")
		if err != nil {
			t.Fatalf("first connection: %v", err)
		}
		if c, err := tryTLS(t, tlsAddr, "blog.example.com"); err == nil {
			c.Close()
			t.Fatal("a second connection from 127.0.0.1 was routed with maxConnsPerSource 1")
		}
		held.Close()
	})
	t.Run("proxy.maxPeeksPerNetwork", func(t *testing.T) {
		reload("  routes:\n", "  maxPeeksPerNetwork: 1\n  routes:\n")
		waitGauge(t, metricsURL, "hairpin_proxy_open_connections", func(v float64) bool { return v == 0 })
		peeking, err := net.Dial("tcp", tlsAddr) // sends no hello: stays in the routing phase
		if err != nil {
			t.Fatal(err)
		}
		defer peeking.Close()
		// The proxy has taken it (and counts its peek right after).
		waitGauge(t, metricsURL, "hairpin_proxy_open_connections", func(v float64) bool { return v >= 1 })
		if c, err := tryTLS(t, tlsAddr, "blog.example.com"); err == nil {
			c.Close()
			t.Fatal("a second connection in the routing phase from 127.0.0.0/24 was let in with maxPeeksPerNetwork 1")
		}
		peeking.Close()
	})
	hello := clientHello(t, "silent.example.com")
	t.Run("proxy.idleTimeout", func(t *testing.T) {
		reload("  routes:\n", "  idleTimeout: 1s\n  routes:\n")
		c, err := net.Dial("tcp", tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello) // routed to the silent backend; nothing more either way
		if !closedWithin(c, 5*time.Second) {
			t.Fatal("a connection silent both ways was not closed within 5s of idleTimeout 1s")
		}
	})
	t.Run("proxy.halfCloseTimeout", func(t *testing.T) {
		reload("  routes:\n", "  halfCloseTimeout: 1s\n  routes:\n")
		c, err := net.Dial("tcp", tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello)
		c.(*net.TCPConn).CloseWrite() // the client is done; the backend never is
		if !closedWithin(c, 5*time.Second) {
			t.Fatal("a half-closed connection was not closed within 5s of halfCloseTimeout 1s")
		}
	})
}
