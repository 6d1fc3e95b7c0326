package dnssplit

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/miekg/dns"
)

// freePort finds a loopback port free for both UDP and TCP, for a peer that
// cannot report the port it bound. The tiny race until the peer binds it is
// accepted: only loopback, only tests.
// handedOut holds the ports freePort returned in this test process.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			l.Close()
			// A released port can come back from the kernel on the next
			// call: never hand one out twice (two peers of one test).
			handedOut.Lock()
			seen := handedOut.ports[port]
			if handedOut.ports == nil {
				handedOut.ports = map[int]bool{}
			}
			handedOut.ports[port] = true
			handedOut.Unlock()
			if !seen {
				return port
			}
		}
	}
	t.Fatal("no free port")
	return 0
}

// waitAnswer polls addr until it answers name (the peer's readiness signal)
// with an A record containing want (any answer if want is empty).
func waitAnswer(t *testing.T, addr, name, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < within {
		r, err := exchange(t.Context(), "udp", "", addr, q(name, dns.TypeA))
		if err == nil {
			last = fmt.Sprint(r.Answer)
			if a := firstA(r); a != "" && (want == "" || a == want) {
				return time.Since(start)
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %s with %q within %v; last: %s", addr, name, want, within, last)
	return 0
}

// startPeer runs a program for the test's lifetime, output collected for failures.
func startPeer(t *testing.T, path string, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(path), out.String())
		}
	})
	return stop
}

func run(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(path), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDigViews(t *testing.T) {
	p := interop.Need(t, "dig", "kdig")
	s := splitServer(t)
	addr := start(t, s)
	host, port, _ := net.SplitHostPort(addr)
	dig := func(args ...string) string {
		return strings.TrimSpace(run(t, p["dig"], append([]string{"-p", port, "@" + host, "+tries=1", "+time=2"}, args...)...))
	}
	if got := dig("-b", "127.0.0.2", "+short", "blog.example.com"); got != "192.168.1.20" {
		t.Fatalf("dig from inside: %q", got)
	}
	if got := dig("-b", "127.0.0.1", "+short", "blog.example.com"); got != "203.0.113.1" {
		t.Fatalf("dig from outside: %q", got)
	}
	// ECS spoofing from outside does not reach the inside view.
	if got := dig("-b", "127.0.0.1", "+short", "+subnet=127.0.0.2/32", "blog.example.com"); got != "203.0.113.1" {
		t.Fatalf("dig with spoofed ECS: %q", got)
	}
	// From a trusted proxy it does.
	if got := dig("-b", "127.0.0.3", "+short", "+subnet=127.0.0.2/32", "blog.example.com"); got != "192.168.1.20" {
		t.Fatalf("dig with ECS from the trusted proxy: %q", got)
	}
	if got := dig("-b", "127.0.0.1", "+cookie", "blog.example.com"); !regexp.MustCompile(`(?m)^; COOKIE: [0-9a-f]+ \(good\)$`).MatchString(got) {
		t.Fatalf("dig +cookie:\n%s", got)
	}
	if got := dig("-b", "127.0.0.1", "example.org"); !strings.Contains(got, "status: REFUSED") {
		t.Fatalf("outside, name outside our zones:\n%s", got)
	}
	if got := dig("-b", "127.0.0.1", "nope.example.com"); !strings.Contains(got, "status: NXDOMAIN") || !strings.Contains(got, "flags: qr aa") || !strings.Contains(got, "SOA") {
		t.Fatalf("outside NXDOMAIN:\n%s", got)
	}
	if got := dig("-b", "127.0.0.1", "+notcp", "ANY", "blog.example.com"); !strings.Contains(got, "ANSWER: 1,") || !strings.Contains(got, "203.0.113.1") {
		t.Fatalf("ANY:\n%s", got)
	}
	out := run(t, p["kdig"], "-p", port, "@"+host, "+tcp", "-b", "127.0.0.2", "+short", "blog.example.com", "AAAA")
	if strings.TrimSpace(out) != "2001:db8::20" {
		t.Fatalf("kdig over TCP from inside: %q", out)
	}
}

// unbound runs Unbound on loopback answering www.example.net from local data
// with a short TTL, and returns its address.
func unbound(t *testing.T, path string) (addr string, stop func()) {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`server:
  interface: 127.0.0.1
  port: %d
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "%s"
  pidfile: "%s/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "example.net." static
  local-data: "www.example.net. 5 IN A 198.51.100.77"
  local-data: "mail.example.net. 5 IN A 198.51.100.78"
remote-control:
  control-enable: no
`, port, dir, dir)
	cf := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	stop = startPeer(t, path, "-d", "-c", cf)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	waitAnswer(t, addr, "www.example.net.", "198.51.100.77", 10*time.Second)
	return addr, stop
}

func TestUnboundUpstreamStale(t *testing.T) {
	p := interop.Need(t, "unbound", "dig")
	ubAddr, stopUnbound := unbound(t, p["unbound"])
	ub := netip.MustParseAddrPort(ubAddr)
	persist := filepath.Join(t.TempDir(), "cache.json")
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: ub}}
	s.UpstreamTimeout = 300 * time.Millisecond
	s.Cache.PersistPath = persist
	addr := start(t, s)
	host, port, _ := net.SplitHostPort(addr)
	dig := func(name string) string {
		return strings.TrimSpace(run(t, p["dig"], "-p", port, "@"+host, "-b", "127.0.0.2", "+tries=1", "+time=3", "+short", name))
	}
	if got := dig("www.example.net"); got != "198.51.100.77" {
		t.Fatalf("through unbound: %q", got)
	}
	// Unbound's local-zone static answers NXDOMAIN for other names: cached negatively.
	r := query(t, "udp", "127.0.0.2", addr, q("nx.example.net.", dns.TypeA))
	if r.Rcode != dns.RcodeNameError {
		t.Fatalf("NXDOMAIN through unbound: %v", r)
	}
	// Kill unbound and let the 5 s TTL run out on the cache clock.
	stopUnbound()
	s.cache.mu.Lock()
	s.cache.setClock(func() time.Time { return time.Now().Add(time.Minute) })
	s.cache.mu.Unlock()
	if got := dig("www.example.net"); got != "198.51.100.77" {
		t.Fatalf("stale answer after unbound died: %q", got)
	}
	if st := s.Stats(); st.StaleServed != 1 {
		t.Fatalf("stale served %d", st.StaleServed)
	}
	// Restart during the outage: the persisted cache still answers.
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	s2 := splitServer(t)
	s2.Upstreams = []Upstream{{Addr: ub}}
	s2.UpstreamTimeout = 300 * time.Millisecond
	s2.Cache.PersistPath = persist
	s2.init()
	s2.cache.setClock(func() time.Time { return time.Now().Add(time.Minute) })
	addr2 := start(t, s2)
	r = query(t, "udp", "127.0.0.2", addr2, q("www.example.net.", dns.TypeA))
	if firstA(r) != "198.51.100.77" {
		t.Fatalf("after restart during the outage: %v", r)
	}
}
