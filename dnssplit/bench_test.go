package dnssplit

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/libp2p/go-reuseport"
	"github.com/miekg/dns"
)

// benchNames is how many distinct names each benchmark query file cycles through.
const benchNames = 100

func BenchmarkResolveLocal(b *testing.B) {
	s := splitServer(b)
	b.Cleanup(func() { s.Close() })
	m := q("blog.example.com.", dns.TypeA)
	c := Client{Source: netip.MustParseAddr("127.0.0.2")}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := s.Resolve(b.Context(), m, c, false); len(r.Answer) != 1 {
				b.Fatal(r)
			}
		}
	})
}

// BenchmarkHandleLocal is the whole UDP path of a local answer short of the
// socket: unpack, view choice, lookup, pack.
func BenchmarkHandleLocal(b *testing.B) {
	s := splitServer(b)
	b.Cleanup(func() { s.Close() })
	for _, edns := range []bool{false, true} {
		m := q("blog.example.com.", dns.TypeA)
		if edns {
			m.SetEdns0(1232, false)
		}
		raw, _ := m.Pack()
		src := netip.MustParseAddrPort("127.0.0.2:5353")
		b.Run(fmt.Sprintf("edns=%v", edns), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if out := s.handle(b.Context(), raw, src, netip.Addr{}, false); len(out) < 40 {
					b.Fatal("short reply")
				}
			}
		})
	}
}

func BenchmarkHandleCached(b *testing.B) {
	up, _ := upstream(b, answerA("198.51.100.1", 3600))
	s := splitServer(b)
	s.Upstreams = []Upstream{{Addr: up}}
	b.Cleanup(func() { s.Close() })
	raw, _ := q("www.example.net.", dns.TypeA).Pack()
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	s.handle(b.Context(), raw, src, netip.Addr{}, false)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if out := s.handle(b.Context(), raw, src, netip.Addr{}, false); len(out) < 40 {
				b.Fatal("short reply")
			}
		}
	})
}

var qpsRe = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
var lostRe = regexp.MustCompile(`Queries lost:\s+(\d+)`)

// dnsperf runs dnsperf against addr with the queries in file for secs seconds.
func dnsperf(t *testing.T, path, addr, file string, secs, outstanding int) (qps float64, lost int) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.CommandContext(t.Context(), path, "-s", host, "-p", port, "-d", file, "-l", strconv.Itoa(secs),
		"-c", "4", "-q", strconv.Itoa(outstanding), "-t", "1").CombinedOutput()
	if err != nil {
		t.Fatalf("dnsperf: %v\n%s", err, out)
	}
	m := qpsRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("dnsperf output:\n%s", out)
	}
	qps, _ = strconv.ParseFloat(string(m[1]), 64)
	if l := lostRe.FindSubmatch(out); l != nil {
		lost, _ = strconv.Atoi(string(l[1]))
	}
	return qps, lost
}

// TestPeerBenchmark compares dnssplit with Unbound and dnsmasq under dnsperf
// on loopback: local records, then cached forwarded answers. It runs only
// with HAIRPIN_BENCH=1 (it takes about a minute and both cores;
// HAIRPIN_BENCH_SECS sets the seconds per run, HAIRPIN_BENCH_OURS=1 skips the peers).
func TestPeerBenchmark(t *testing.T) {
	if os.Getenv("HAIRPIN_BENCH") != "1" {
		t.Skip("set HAIRPIN_BENCH=1 to run the dnsperf comparison")
	}
	p := interop.Need(t, "dnsperf", "unbound", "dnsmasq")
	secs := 3
	if v, err := strconv.Atoi(os.Getenv("HAIRPIN_BENCH_SECS")); err == nil && v > 0 {
		secs = v
	}
	dir := t.TempDir()
	var localData, hostRecords []string
	var localQ, fwdQ strings.Builder
	recs := new(Records)
	for i := range benchNames {
		name := fmt.Sprintf("h%d.example.com.", i)
		ip := fmt.Sprintf("192.168.1.%d", i+1)
		recs.AddString(name + " 300 IN A " + ip)
		localData = append(localData, fmt.Sprintf("  local-data: \"%s 300 IN A %s\"", name, ip))
		hostRecords = append(hostRecords, fmt.Sprintf("--host-record=%s,%s,300", strings.TrimSuffix(name, "."), ip))
		fmt.Fprintf(&localQ, "%s A\n", name)
		fmt.Fprintf(&fwdQ, "f%d.example.net. A\n", i)
	}
	localFile, fwdFile := filepath.Join(dir, "local.txt"), filepath.Join(dir, "fwd.txt")
	os.WriteFile(localFile, []byte(localQ.String()), 0o644)
	os.WriteFile(fwdFile, []byte(fwdQ.String()), 0o644)

	// The upstream for forwarded names: a Go server answering everything with a long TTL.
	up, _ := upstream(t, answerA("198.51.100.1", 3600))

	// dnssplit.
	s := &Server{Views: []*View{{Name: "lan", Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Recursion: true, Records: recs}},
		Upstreams: []Upstream{{Addr: up}}}
	ours := startReuseport(t, s, runtime.GOMAXPROCS(0))

	// Unbound: local data and a forward zone to the same upstream, two threads.
	ubPort := freePort(t)
	ubConf := fmt.Sprintf(`server:
  interface: 127.0.0.1
  port: %d
  num-threads: 2
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "%s"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  do-not-query-localhost: no
  local-zone: "example.com." static
%s
forward-zone:
  name: "example.net."
  forward-addr: %s@%d
remote-control:
  control-enable: no
`, ubPort, dir, strings.Join(localData, "\n"), up.Addr(), up.Port())
	cf := filepath.Join(dir, "unbound.conf")
	os.WriteFile(cf, []byte(ubConf), 0o644)
	startPeer(t, p["unbound"], "-d", "-c", cf)
	ubAddr := fmt.Sprintf("127.0.0.1:%d", ubPort)
	waitAnswer(t, ubAddr, "h1.example.com.", "192.168.1.2", 10*time.Second)

	// dnsmasq: host records and the same upstream.
	dmPort := freePort(t)
	args := append([]string{"-k", "--conf-file=/dev/null", "--pid-file=", "--user=root", "--port=" + strconv.Itoa(dmPort),
		"--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts", "--cache-size=10000",
		fmt.Sprintf("--server=%s#%d", up.Addr(), up.Port())}, hostRecords...)
	startPeer(t, p["dnsmasq"], args...)
	dmAddr := fmt.Sprintf("127.0.0.1:%d", dmPort)
	waitAnswer(t, dmAddr, "h1.example.com.", "192.168.1.2", 10*time.Second)

	servers := []struct{ name, addr string }{{"dnssplit", ours}, {"unbound", ubAddr}, {"dnsmasq", dmAddr}}
	if os.Getenv("HAIRPIN_BENCH_OURS") == "1" {
		servers = servers[:1]
	}
	// The machine is shared: interleave the servers over several rounds and
	// keep each one's best run, so a burst of someone else's load does not
	// decide the ratio.
	rounds := 3
	for _, kind := range []struct{ name, file string }{{"local records", localFile}, {"cached forwarded", fwdFile}} {
		best := map[string]float64{}
		for _, sv := range servers {
			if kind.file == fwdFile {
				dnsperf(t, p["dnsperf"], sv.addr, kind.file, 1, 200) // warm the cache
			}
		}
		for r := range rounds {
			for _, sv := range servers {
				qps, lost := dnsperf(t, p["dnsperf"], sv.addr, kind.file, secs, 200)
				best[sv.name] = max(best[sv.name], qps)
				t.Logf("round %d %-17s %-9s %9.0f qps (%d lost)", r+1, kind.name, sv.name, qps, lost)
			}
		}
		for _, sv := range servers {
			t.Logf("best %-17s %-9s %9.0f qps", kind.name, sv.name, best[sv.name])
		}
		if len(servers) == 3 {
			t.Logf("%s: dnssplit/unbound %.2f, dnssplit/dnsmasq %.2f", kind.name, best["dnssplit"]/best["unbound"], best["dnssplit"]/best["dnsmasq"])
		}
	}

	// Rate limiting: a flood from one prefix against a limit of 100/s.
	limited := &Server{Views: []*View{{Name: "outside", Records: recs}}, RateLimit: &RateLimit{PerSecond: 100, Slip: -1}}
	laddr := start(t, limited)
	sent := time.Now()
	qps, lost := dnsperf(t, p["dnsperf"], laddr, localFile, 3, 60000)
	st := limited.Stats()
	t.Logf("flood against a 100/s limit: %.0f answered per second, %d lost, %d limited, %d answered in %v",
		qps, lost, st.RateLimited, st.Queries["outside"]["NOERROR"], time.Since(sent).Round(time.Second))
	if qps > 150 {
		t.Errorf("rate limit let %.0f qps through", qps)
	}
}

// startReuseport serves s on n UDP sockets sharing one loopback port with
// SO_REUSEPORT (as Unbound does with one socket per thread) and on TCP.
func startReuseport(t *testing.T, s *Server, n int) string {
	t.Helper()
	first, err := reuseport.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := first.LocalAddr().String()
	pcs := []net.PacketConn{first}
	for range n - 1 {
		pc, err := reuseport.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
	}
	done := make(chan error, n)
	for _, pc := range pcs {
		go func() { done <- s.ServePacket(pc) }()
	}
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		for range n {
			<-done
		}
	})
	return addr
}
