package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/miekg/dns"
)

var splitdnsBin = &proctest.Binary{Dir: "."}

func TestRunExplainAndBadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`dns:
  views:
    - name: inside
      networks: ["192.168.1.0/24"]
      records: ["blog.example.com. 300 IN A 192.168.1.20"]
    - name: outside
      networks: ["0.0.0.0/0"]
      records: ["blog.example.com. 300 IN A {public}"]
`), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("dns:\n  views:\n    - name: x\n      networks: [\"10.0.0.0/33\"]\n"), 0o644)
	for _, tt := range []struct {
		args    []string
		code    int
		wantErr string // substring of stderr
		wantOut string // substring of stdout
	}{
		{[]string{"-config", good, "-explain", "192.168.1.7"}, 0, "", `view "inside" (#0): source 192.168.1.7 is in 192.168.1.0/24`},
		{[]string{"-config", good, "-explain", "198.51.100.9"}, 0, "", `view "outside" (#1): source 198.51.100.9 is in 0.0.0.0/0`},
		{[]string{"-config", good, "-explain", "nope"}, 2, "-explain", ""},
		{[]string{"-config", good, "-check"}, 0, "", "configuration OK"},
		{[]string{"-config", bad}, 1, "line 4: dns.views[0].networks[0]", ""},
		{[]string{"-config", bad, "-check"}, 1, "line 4: dns.views[0].networks[0]", ""},
		{[]string{}, 2, "-config is required", ""},
		{[]string{"-config", good, "extra"}, 2, "unexpected arguments: extra", ""},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.wantErr) || !strings.Contains(stdout.String(), tt.wantOut) {
				t.Fatalf("exit %d (want %d), stdout %q (want %q), stderr %q (want %q)",
					code, tt.code, stdout.String(), tt.wantOut, stderr.String(), tt.wantErr)
			}
		})
	}
}

// TestExampleFileAndHelp runs the real binary: -h prints a one-line
// description and the flags and exits 0, and example.yaml passes -explain.
func TestExampleFileAndHelp(t *testing.T) {
	bin := splitdnsBin.Path(t)
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), description+"\n") || !strings.Contains(string(out), "-shutdown-timeout") ||
		!strings.Contains(string(out), "-config") || !strings.Contains(string(out), "-check") {
		t.Fatalf("-h: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "-config", "example.yaml", "-public", "203.0.113.1", "-explain", "192.168.1.7").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `view "inside"`) {
		t.Fatalf("example.yaml: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "-config", "example.yaml", "-check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("example.yaml -check: %v\n%s", err, out)
	}
}

func TestMain(m *testing.M) {
	code := leakcheck.Run(m)
	splitdnsBin.Cleanup()
	os.Exit(code)
}

// query asks server for name's A records from 127.0.0.1 and returns them and
// the rcode.
func query(t *testing.T, server, name string) ([]string, int) {
	t.Helper()
	c := &dns.Client{Timeout: 3 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, r.Rcode
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

const reloadConfig = `dns:
  listen: ["LISTEN"]
  upstreams: []
  views:
    - name: inside
      networks: ["127.0.0.1/32"]
      recursion: true
      records: ["blog.example.com. 300 IN A 192.168.1.20"]
    - name: outside
      networks: ["0.0.0.0/0"]
      records: ["blog.example.com. 300 IN A {public}"]
`

// TestReload runs the binary: SIGHUP applies a changed record (views swap
// in place) and a new upstream (the server swaps on the same sockets),
// names dns.listen as waiting for a restart, and a bad file is rejected
// with the old configuration still answering.
func TestReload(t *testing.T) {
	bin := splitdnsBin.Path(t)
	addr := proctest.FreePort(t)
	path := filepath.Join(t.TempDir(), "splitdns.yaml")
	base := strings.Replace(reloadConfig, "LISTEN", addr, 1)
	writeFile(t, path, base)
	p := proctest.Start(t, exec.Command(bin, "-config", path, "-public", "203.0.113.1"))
	n := p.WaitFor(t, 0, "splitdns ready", 10*time.Second)
	if got, _ := query(t, addr, "blog.example.com"); strings.Join(got, ",") != "192.168.1.20" {
		t.Fatalf("before reload: %v", got)
	}
	if _, rcode := query(t, addr, "www.example.org"); rcode != dns.RcodeServerFailure {
		t.Fatalf("recursion with no upstream: %s, want SERVFAIL", dns.RcodeToString[rcode])
	}

	// A bad file: rejected by key path and line, the old answers stay.
	writeFile(t, path, strings.Replace(base, "192.168.1.20", "192.168.1.300", 1))
	p.Signal(t, syscall.SIGHUP)
	n = p.WaitFor(t, n, "reload rejected", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, "line 8: dns.views[0].records[0]") {
		t.Errorf("the rejection does not name the key and line:\n%s", out)
	}
	if got, _ := query(t, addr, "blog.example.com"); strings.Join(got, ",") != "192.168.1.20" {
		t.Fatalf("after a bad file: %v, want the old 192.168.1.20", got)
	}

	// A good file: new record, new upstream, and a listener change that
	// waits for a restart.
	next := strings.Replace(base, "192.168.1.20", "192.168.1.99", 1)
	next = strings.Replace(next, "upstreams: []", `upstreams: ["`+proctest.FakeUpstream(t)+`"]`, 1)
	next = strings.Replace(next, addr, proctest.FreePort(t), 1)
	writeFile(t, path, next)
	p.Signal(t, syscall.SIGHUP)
	p.WaitFor(t, n, "take effect at the next restart", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, "restart=[dns.listen]") {
		t.Errorf("the reload does not name exactly dns.listen as waiting for a restart:\n%s", out)
	}
	if got, _ := query(t, addr, "blog.example.com"); strings.Join(got, ",") != "192.168.1.99" {
		t.Fatalf("changed record after reload: %v, want 192.168.1.99", got)
	}
	if got, _ := query(t, addr, "www.example.org"); strings.Join(got, ",") != "192.0.2.99" {
		t.Fatalf("new upstream after reload: %v, want 192.0.2.99", got)
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.WaitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// TestShutdownTimeout: SIGTERM while a query waits on an upstream that
// never answers (upstreamTimeout 30s) exits within -shutdown-timeout.
func TestShutdownTimeout(t *testing.T) {
	bin := splitdnsBin.Path(t)
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	addr := proctest.FreePort(t)
	path := filepath.Join(t.TempDir(), "splitdns.yaml")
	cfg := strings.Replace(reloadConfig, "LISTEN", addr, 1)
	cfg = strings.Replace(cfg, "upstreams: []", `upstreams: ["`+hole.LocalAddr().String()+`"]`+"\n  upstreamTimeout: 30s", 1)
	writeFile(t, path, cfg)
	p := proctest.Start(t, exec.Command(bin, "-config", path, "-shutdown-timeout", "1s"))
	p.WaitFor(t, 0, "splitdns ready", 10*time.Second)
	go func() {
		c := &dns.Client{Timeout: 20 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("www.example.org.", dns.TypeA)
		_, _, _ = c.Exchange(m, addr)
	}()
	// The query is in flight once the upstream has it.
	hole.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := hole.ReadFrom(make([]byte, 512)); err != nil {
		t.Fatalf("the query never reached the upstream: %v", err)
	}
	start := time.Now()
	p.Signal(t, syscall.SIGTERM)
	code := p.WaitExit(t, 10*time.Second)
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("exit %s after SIGTERM with -shutdown-timeout 1s", took.Round(time.Millisecond))
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	// The query held the shutdown until the deadline: without it the test
	// would pass on an idle server.
	if out := p.Output(); !strings.Contains(out, "shutdown reached -shutdown-timeout") {
		t.Errorf("the shutdown did not wait for the query in flight:\n%s", out)
	}
}
