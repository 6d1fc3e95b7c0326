package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/nat"
	"github.com/miekg/dns"
)

func TestMain(m *testing.M) {
	code := leakcheck.Run(m)
	gatewayBin.Cleanup()
	os.Exit(code)
}

// gatewayBin is the gateway binary, built once for the tests that run it.
var gatewayBin = &proctest.Binary{Dir: "."}

func freePort(t *testing.T) string { return proctest.FreePort(t) }

// loopbackConfig is the built-in default with every port replaced by a free one.
func loopbackConfig(t *testing.T) []byte {
	t.Helper()
	out := string(defaultConfig)
	for _, old := range []string{"127.0.0.1:5353", "127.0.0.1:8443", "127.0.0.1:8080", "127.0.0.1:8444",
		"127.0.0.1:8081", "127.0.0.1:3478", "127.0.0.1:9090"} {
		// Quoted, so that a new port never matches the prefix of a later
		// pattern ("127.0.0.1:34785" contains "127.0.0.1:3478").
		out = strings.ReplaceAll(out, `"`+old+`"`, `"`+freePort(t)+`"`)
	}
	return []byte(out)
}

func writeConfig(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// query asks server for name's A records from local source address src.
func query(t *testing.T, server, src, name string) ([]string, int) {
	t.Helper()
	c := &dns.Client{Timeout: 2 * time.Second}
	if src != "" {
		c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("dns query %s from %s: %v", name, src, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, r.Rcode
}

// tlsName connects through the proxy with SNI name and returns the name in
// the certificate the backend presented (end-to-end TLS: not the proxy's).
func tlsName(t *testing.T, proxyAddr, name string) (string, string) {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		t.Fatalf("TLS through the proxy to %s: %v", name, err)
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		t.Fatal("no certificate")
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
	body, _ := io.ReadAll(c)
	return certs[0].Subject.CommonName, string(body)
}

// startGateway starts a gateway on the configuration yaml, logging nowhere,
// and shuts it down when the test ends.
func startGateway(t *testing.T, yaml string) *gateway {
	t.Helper()
	return startLogging(t, yaml, config.Log{}.Logger(io.Discard))
}

// startLogging is startGateway with log; a shutdown that fails dumps the
// goroutines.
func startLogging(t *testing.T, yaml string, log *slog.Logger) *gateway {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	gw, err := start(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		}
	})
	return gw
}

func TestQuickstartInProcess(t *testing.T) {
	var logs bytes.Buffer
	gw := startLogging(t, string(loopbackConfig(t)), config.Log{Level: "debug"}.Logger(&syncWriter{w: &logs}))
	cfg := gw.cfg
	dnsAddr := gw.dnsAddrs[0].String()

	t.Run("dns inside view", func(t *testing.T) {
		got, rcode := query(t, dnsAddr, "127.0.0.1", "blog.example.com")
		if rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != "192.168.1.20" {
			t.Fatalf("inside: %v rcode %d, want [192.168.1.20]", got, rcode)
		}
	})
	t.Run("dns outside view gets the public address", func(t *testing.T) {
		got, _ := query(t, dnsAddr, "127.0.0.2", "blog.example.com")
		if len(got) != 1 || got[0] != "203.0.113.1" {
			t.Fatalf("outside: %v, want [203.0.113.1]", got)
		}
	})
	t.Run("outside client gets no recursion", func(t *testing.T) {
		_, rcode := query(t, dnsAddr, "127.0.0.2", "example.org")
		if rcode != dns.RcodeRefused {
			t.Fatalf("rcode %s, want REFUSED", dns.RcodeToString[rcode])
		}
	})
	t.Run("tls route reaches the demo backend end to end", func(t *testing.T) {
		cn, body := tlsName(t, cfg.Proxy.TLS[0], "blog.example.com")
		if cn != "blog.example.com" {
			t.Errorf("certificate CN %q, want the backend's blog.example.com", cn)
		}
		if !strings.Contains(body, "hello from the hairpin demo backend: https://blog.example.com") {
			t.Errorf("body %q", body)
		}
	})
	t.Run("http route by Host", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+cfg.Proxy.HTTP[0]+"/x", nil)
		req.Host = "blog.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		http.DefaultClient.CloseIdleConnections()
		if !strings.Contains(string(body), "http://blog.example.com/x") {
			t.Fatalf("body %q", body)
		}
	})
	t.Run("unknown name is not routed", func(t *testing.T) {
		d := &tls.Dialer{Config: &tls.Config{ServerName: "nope.example.com", InsecureSkipVerify: true}}
		c, err := d.DialContext(t.Context(), "tcp", cfg.Proxy.TLS[0])
		if err == nil {
			c.Close()
			t.Fatal("a name with no route got a TLS session")
		}
	})
	t.Run("metrics and health", func(t *testing.T) {
		body := get(t, "http://"+cfg.Metrics+"/metrics")
		for _, want := range []string{`hairpin_dns_queries_total{rcode="NOERROR",view="inside"}`,
			"hairpin_proxy_routed_total", "hairpin_relay_allocations", "\nhairpin_relay_own_address_denials_total 0", "\ngo_goroutines ", "\nprocess_open_fds ", "\nprocess_resident_memory_bytes ", `hairpin_nat_info{classic="unknown",filtering="unknown",hairpinning="unknown",mapping="unknown",public="203.0.113.1"} 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if got := get(t, "http://"+cfg.Metrics+"/healthz"); got != "ok\n" {
			t.Errorf("/healthz = %q", got)
		}
	})
	t.Run("turn relay with coturn's client", func(t *testing.T) {
		paths := interop.Need(t, "turnutils_uclient")
		_, port, _ := net.SplitHostPort(cfg.Relay.Listen[0])
		// -y: client to client through the relay. Both allocations advertise
		// the public address, so the relay must deliver in process.
		out, err := exec.CommandContext(t.Context(), paths["turnutils_uclient"], "-p", port, "-W", "change-me",
			"-u", "demo", "-y", "-n", "20", "-m", "2", "-l", "100", "127.0.0.1").CombinedOutput()
		if err != nil {
			t.Fatalf("turnutils_uclient: %v\n%s", err, out)
		}
		if err := uclientDelivered(string(out)); err != nil {
			t.Fatalf("%v:\n%s", err, tail(string(out), 6))
		}
	})
}

// uclientDelivered reads turnutils_uclient's closing totals and reports
// whether messages went through the relay and none were lost.
func uclientDelivered(out string) error {
	var sent, recv int
	found := false
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "start_mclient: tot_send_msgs="); i >= 0 {
			if _, err := fmt.Sscanf(line[i:], "start_mclient: tot_send_msgs=%d, tot_recv_msgs=%d", &sent, &recv); err == nil {
				found = true
			}
		}
	}
	switch {
	case !found:
		return fmt.Errorf("no totals in turnutils_uclient's output")
	case sent == 0 || recv != sent:
		return fmt.Errorf("relay delivered %d of %d messages", recv, sent)
	case !strings.Contains(out, "Total lost packets 0 "):
		return fmt.Errorf("relay lost packets")
	}
	return nil
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	http.DefaultClient.CloseIdleConnections()
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestCheckNamesFieldAndLine(t *testing.T) {
	bad := strings.Replace(string(defaultConfig), `networks: ["127.0.0.1/32", "192.168.0.0/16"]`,
		`networks: ["127.0.0.1/32", "192.168.0.0/33"]`, 1)
	bad = strings.Replace(bad, `proxyProtocol: none`, `proxyProtocol: v3`, 1)
	bad = strings.Replace(bad, "  realm: example.com\n", "  realm: example.com\n  bogus: 1\n", 1)
	lineOf := func(s, sub string) int {
		i := strings.Index(s, sub)
		if i < 0 {
			t.Fatalf("%q not in config", sub)
		}
		return strings.Count(s[:i], "\n") + 1
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"-check", "-config", writeConfig(t, []byte(bad))}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", code, stderr.String())
	}
	// An unknown key comes alone, with its line and key path.
	if want := fmt.Sprintf(`line %d: relay.bogus: unknown key`, lineOf(bad, "bogus")); !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q lacks %q", stderr.String(), want)
	}
	bad = strings.Replace(bad, "  bogus: 1\n", "", 1)
	stderr.Reset()
	if code := run([]string{"-check", "-config", writeConfig(t, []byte(bad))}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{
		fmt.Sprintf("line %d: dns.views[0].networks[1]", lineOf(bad, "192.168.0.0/33")),
		fmt.Sprintf("line %d: proxy.routes[0].proxyProtocol", lineOf(bad, "proxyProtocol: v3")),
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", stderr.String(), want)
		}
	}
	stdout.Reset()
	if code := run([]string{"-check"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "configuration OK") {
		t.Fatalf("built-in default: exit %d, %q", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"-print-default-config"}, &stdout, &stderr); code != 0 || stdout.String() != string(defaultConfig) {
		t.Fatalf("-print-default-config: exit %d", code)
	}
	if code := run([]string{"-nosuchflag"}, &stdout, &stderr); code != 2 {
		t.Fatalf("bad flag: exit %d, want 2", code)
	}
}

func TestReloadKeepsServingOnBadFile(t *testing.T) {
	bin := gatewayBin.Path(t)
	good := loopbackConfig(t)
	path := writeConfig(t, good)
	p := proctest.Start(t, exec.CommandContext(t.Context(), bin, "-config", path))
	n := p.WaitFor(t, 0, "gateway ready", 20*time.Second)
	cfg, err := config.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	dnsAddr := cfg.DNS.Listen[0]

	// A bad file: rejected, old records and routes still served.
	bad := strings.Replace(string(good), "192.168.1.20", "192.168.1.300", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGHUP)
	n = p.WaitFor(t, n, "reload rejected", 10*time.Second)
	if !strings.Contains(p.Output(), "dns.views[0].records[0]") {
		t.Errorf("the rejection does not name the field:\n%s", p.Output())
	}
	if got, _ := query(t, dnsAddr, "127.0.0.1", "blog.example.com"); len(got) != 1 || got[0] != "192.168.1.20" {
		t.Fatalf("after a bad reload: %v, want the old [192.168.1.20]", got)
	}
	if cn, _ := tlsName(t, cfg.Proxy.TLS[0], "blog.example.com"); cn != "blog.example.com" {
		t.Fatalf("proxy after a bad reload: %q", cn)
	}

	// A good file: new records are served, and a new route appears.
	next := strings.Replace(string(good), "192.168.1.20", "192.168.1.99", 1)
	next = strings.Replace(next, "    - host: blog.example.com\n", "    - host: www.example.com\n      backends: [\""+cfg.Demo.TLS+"\"]\n      allow: [\"127.0.0.0/8\"]\n    - host: blog.example.com\n", 1)
	if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGHUP)
	p.WaitFor(t, n, "configuration reloaded", 10*time.Second)
	if got, _ := query(t, dnsAddr, "127.0.0.1", "blog.example.com"); len(got) != 1 || got[0] != "192.168.1.99" {
		t.Fatalf("after a good reload: %v, want [192.168.1.99]", got)
	}
	if got, _ := query(t, dnsAddr, "127.0.0.2", "blog.example.com"); len(got) != 1 || got[0] != "203.0.113.1" {
		t.Fatalf("outside view after reload: %v, want the public address", got)
	}
	if cn, _ := tlsName(t, cfg.Proxy.TLS[0], "www.example.com"); cn != "blog.example.com" {
		t.Fatalf("new route after reload: reached %q", cn)
	}
}

// TestQuickstartBinaryNoArguments runs the README's first command as written:
// the gateway with no arguments, on its fixed default ports. It runs inside a
// network namespace of its own so those ports cannot collide with anything.
func TestQuickstartBinaryNoArguments(t *testing.T) {
	interop.NeedRoot(t)
	paths := interop.Need(t, "ip", "dig")
	bin := gatewayBin.Path(t)
	ns := fmt.Sprintf("hpgw%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	if out, err := exec.Command(paths["ip"], "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(paths["ip"], "netns", "del", ns).Run() })
	if out, err := exec.Command(paths["ip"], "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v\n%s", err, out)
	}
	p := proctest.Start(t, exec.CommandContext(t.Context(), paths["ip"], "netns", "exec", ns, bin))
	p.WaitFor(t, 0, "gateway ready", 20*time.Second)
	if !strings.Contains(p.Output(), "dig @127.0.0.1 -p 5353 blog.example.com") {
		t.Errorf("the quickstart does not print what to try:\n%s", p.Output())
	}
	in := func(args ...string) string {
		out, err := exec.CommandContext(t.Context(), paths["ip"], append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := in("dig", "+short", "@127.0.0.1", "-p", "5353", "blog.example.com"); got != "192.168.1.20" {
		t.Errorf("inside view: %q", got)
	}
	if got := in("dig", "+short", "@127.0.0.1", "-p", "5353", "-b", "127.0.0.2", "blog.example.com"); got != "203.0.113.1" {
		t.Errorf("outside view: %q", got)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		out := in("sh", "-c", "openssl s_client -connect 127.0.0.1:8443 -servername blog.example.com </dev/null 2>&1")
		if !strings.Contains(out, "CN = blog.example.com") && !strings.Contains(out, "CN=blog.example.com") {
			t.Errorf("openssl s_client did not see the demo certificate:\n%s", out)
		}
	}
	if _, err := exec.LookPath("turnutils_uclient"); err == nil {
		out := in("turnutils_uclient", "-p", "3478", "-W", "change-me", "-u", "demo", "-y", "-n", "10", "-m", "1", "-l", "100", "127.0.0.1")
		if err := uclientDelivered(out); err != nil {
			// uclient's error lines come early in its output; the
			// gateway's last lines say what the relay made of them.
			t.Errorf("TURN via the default relay: %v\nuclient:\n%s\ngateway:\n%s",
				err, uclientErrors(out, tail(out, 5)), tail(p.Output(), 20))
		}
	}
}

// uclientErrors returns turnutils_uclient's lines that report an error or
// a retry, followed by last.
func uclientErrors(out, last string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "error") || strings.Contains(line, "trying") || strings.Contains(line, "Cannot") {
			b.WriteString(line + "\n")
		}
	}
	return b.String() + last
}

// TestProbedPublicAddress: with nat.stun set and no fixed address, the
// gateway learns the public address by probing and announces it in the
// outside DNS view, to the relay and in the metrics; a later change reaches
// them all too.
func TestProbedPublicAddress(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stun := &nat.Server{}
	stunDone := make(chan error, 1)
	go func() { stunDone <- stun.ServePacket(pc) }()
	t.Cleanup(func() {
		stun.Close()
		<-stunDone
	})
	data := strings.Replace(string(loopbackConfig(t)), `  stun: []`, `  stun: ["`+pc.LocalAddr().String()+`"]`, 1)
	data = strings.Replace(data, `  public: "203.0.113.1"`, `  public: ""`, 1)
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := start(t.Context(), cfg, config.Log{}.Logger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.shutdown(ctx)
	})
	dnsAddr := gw.dnsAddrs[0].String()
	// Loopback has no NAT: the probed public address is 127.0.0.1 itself.
	if got, _ := query(t, dnsAddr, "127.0.0.2", "blog.example.com"); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Fatalf("outside view after the probe: %v, want [127.0.0.1]", got)
	}
	if got := gw.relay.PublicAddr(); got.String() != "127.0.0.1" {
		t.Errorf("relay announces %v", got)
	}
	if body := get(t, "http://"+cfg.Metrics+"/metrics"); !strings.Contains(body, `public="127.0.0.1"`) ||
		!strings.Contains(body, `mapping="endpoint-independent"`) {
		t.Errorf("metrics lack the probe's findings:\n%s", grepLines(body, "hairpin_nat"))
	}

	// The address changes (a new lease from the ISP): everything follows.
	gw.setPublic(netip.MustParseAddr("198.51.100.77"))
	if got, _ := query(t, dnsAddr, "127.0.0.2", "blog.example.com"); len(got) != 1 || got[0] != "198.51.100.77" {
		t.Fatalf("outside view after a change: %v", got)
	}
	if got, _ := query(t, dnsAddr, "127.0.0.1", "blog.example.com"); len(got) != 1 || got[0] != "192.168.1.20" {
		t.Fatalf("inside view must not change: %v", got)
	}
	if got := gw.relay.PublicAddr(); got.String() != "198.51.100.77" {
		t.Errorf("relay announces %v after a change", got)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSectionsAreOptional: a file with only a dns: section runs just DNS
// (no NAT probe, proxy, relay or metrics).
func TestSectionsAreOptional(t *testing.T) {
	addr := freePort(t)
	cfg, err := config.Parse([]byte("dns:\n  listen: [\"" + addr + "\"]\n  views:\n    - name: all\n      networks: [\"0.0.0.0/0\"]\n      records: [\"a.example.com. 60 IN A 192.0.2.1\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := start(t.Context(), cfg, config.Log{}.Logger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	if got, _ := query(t, addr, "127.0.0.1", "a.example.com"); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Fatalf("dns-only gateway: %v", got)
	}
	if gw.proxy != nil || gw.relay != nil || gw.prober != nil || gw.metrics != nil {
		t.Error("parts without a section were started")
	}
}

// TestRestartKeys: a reload names by key path exactly the changes it does
// not apply.
func TestRestartKeys(t *testing.T) {
	base := string(defaultConfig)
	parse := func(s string) *config.File {
		t.Helper()
		f, err := config.Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	restart := func(next string) string {
		var out []string
		for _, p := range config.Changed(parse(base), parse(next)) {
			if !config.Covered(p, (&gateway{}).live()) {
				out = append(out, p)
			}
		}
		return strings.Join(out, ",")
	}
	if got := restart(base); got != "" {
		t.Errorf("same file: %v", got)
	}
	live := strings.Replace(base, "192.168.1.20", "192.168.1.21", 1)
	live = strings.Replace(live, `upstreams: []`, `upstreams: ["192.0.2.53"]`, 1)
	live = strings.Replace(live, `interval: 5m`, `interval: 10m`, 1)
	if got := restart(live); got != "" {
		t.Errorf("records, upstreams, probe interval: %v", got)
	}
	next := strings.Replace(base, `listen: ["127.0.0.1:5353"]`, `listen: ["127.0.0.1:5354"]`, 1)
	next = strings.Replace(next, `secret: "change-me"`, `secret: "other"`, 1)
	next = strings.Replace(next, `realm: example.com`, `realm: example.org`, 1)
	next = strings.Replace(next, `level: info`, `level: debug`, 1)
	if got := restart(next); got != "dns.listen,log.level,relay.realm" {
		t.Errorf("listener, relay realm and log level (the secret is live): %q", got)
	}
}
