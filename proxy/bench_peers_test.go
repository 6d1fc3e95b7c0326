package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
)

// TestPeerBenchmark compares, in one run on loopback with the same Go TLS
// backend and the same load tool (wrk), a direct connection with our proxy
// (examples/sniproxy, its own process), HAProxy (mode tcp, req.ssl_sni) and
// sniproxy: new TLS connections per second (one request per connection),
// p99 latency of those, and bulk throughput. Run with HAIRPIN_BENCH=1.
func TestPeerBenchmark(t *testing.T) {
	if os.Getenv("HAIRPIN_BENCH") != "1" {
		t.Skip("set HAIRPIN_BENCH=1 to run the peer benchmark")
	}
	paths := interop.Need(t, "wrk", "haproxy", "sniproxy", "go")
	dur := "5s"
	if d := os.Getenv("HAIRPIN_BENCH_DURATION"); d != "" {
		dur = d
	}
	dir := t.TempDir()

	// The backend: Go net/http over TLS, "ok" on /, 64 MiB on /bulk.
	cert, _ := testCert(t, "localhost")
	bulk := bytes.Repeat([]byte("0123456789abcdef"), 4<<20)
	bl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bulk" {
			w.Write(bulk)
			return
		}
		w.Write([]byte("ok\n"))
	})}
	go srv.Serve(bl)
	t.Cleanup(func() { srv.Close() })
	backend := bl.Addr().String()

	// Ours, as its own process.
	bin := filepath.Join(dir, "sniproxy-hairpin")
	if out, err := exec.Command(paths["go"], "build", "-o", bin, "../examples/sniproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ours := freePort(t)
	cfg := fmt.Sprintf("log: {level: warn}\nproxy:\n  tls: [%q]\n  maxPeeksPerSource: -1\n  routes:\n    - host: localhost\n      backends: [%q]\n      healthCheck: {interval: \"off\"}\n", ours, backend)
	must(t, os.WriteFile(filepath.Join(dir, "ours.yaml"), []byte(cfg), 0o600))
	startPeer(t, exec.CommandContext(t.Context(), bin, "-config", filepath.Join(dir, "ours.yaml")), ours)

	hap := freePort(t)
	hcfg := fmt.Sprintf(`global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind %s
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend be if { req.ssl_sni -i localhost }
backend be
  server s1 %s
`, hap, backend)
	must(t, os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(hcfg), 0o600))
	startPeer(t, exec.CommandContext(t.Context(), paths["haproxy"], "-db", "-f", filepath.Join(dir, "haproxy.cfg")), hap)

	snp := freePort(t)
	_, bport, _ := net.SplitHostPort(backend)
	scfg := fmt.Sprintf(`user root
pidfile %s/sniproxy.pid
error_log {
  filename /dev/null
}
listener %s {
  protocol tls
  table t
}
table t {
  localhost 127.0.0.1:%s
}
`, dir, snp, bport)
	must(t, os.WriteFile(filepath.Join(dir, "sniproxy.conf"), []byte(scfg), 0o600))
	startPeer(t, exec.CommandContext(t.Context(), paths["sniproxy"], "-f", "-c", filepath.Join(dir, "sniproxy.conf")), snp)

	type result struct {
		name        string
		connsPerSec float64
		p99         time.Duration
		bytesPerSec float64
	}
	// Rounds interleave the targets; each keeps its best figures, which
	// filters out the noise of a shared machine better than one long run.
	rounds := 2
	if r := os.Getenv("HAIRPIN_BENCH_ROUNDS"); r != "" {
		fmt.Sscan(r, &rounds)
	}
	targets := []struct{ name, addr string }{{"direct", backend}, {"hairpin", ours}, {"haproxy", hap}, {"sniproxy", snp}}
	results := make([]result, len(targets))
	for range rounds {
		for i, target := range targets {
			_, port, _ := net.SplitHostPort(target.addr)
			url := "https://localhost:" + port
			out := runWrk(t, paths["wrk"], "-t2", "-c16", "-d"+dur, "--latency", "-H", "Connection: close", url+"/")
			r := &results[i]
			r.name = target.name
			if v := wrkFloat(t, out, `Requests/sec:\s+([\d.]+)`); v > r.connsPerSec {
				r.connsPerSec = v
			}
			if v := wrkLatency(t, out, `99%\s+([\d.]+\w+)`); r.p99 == 0 || v < r.p99 {
				r.p99 = v
			}
			out = runWrk(t, paths["wrk"], "-t2", "-c4", "-d"+dur, url+"/bulk")
			if v := wrkBytes(t, out); v > r.bytesPerSec {
				r.bytesPerSec = v
			}
		}
	}
	d := results[0]
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s %12s %9s %10s %12s %10s\n", "target", "new TLS/s", "p99", "added p99", "bulk GB/s", "vs direct")
	for _, r := range results {
		fmt.Fprintf(&b, "%-9s %12.0f %9v %10v %12.2f %9.0f%%\n", r.name, r.connsPerSec, r.p99.Round(10*time.Microsecond),
			(r.p99 - d.p99).Round(10*time.Microsecond), r.bytesPerSec/1e9, 100*r.bytesPerSec/d.bytesPerSec)
	}
	ours_, hp := results[1], results[2]
	fmt.Fprintf(&b, "hairpin/haproxy new-conn ratio %.2f, hairpin/direct throughput %.2f\n", ours_.connsPerSec/hp.connsPerSec, ours_.bytesPerSec/d.bytesPerSec)
	t.Log("\n" + b.String())
}

func runWrk(t *testing.T, wrk string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), wrk, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func wrkFloat(t *testing.T, out, re string) float64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in wrk output:\n%s", re, out)
	}
	var f float64
	fmt.Sscan(m[1], &f)
	return f
}

func wrkLatency(t *testing.T, out, re string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in wrk output:\n%s", re, out)
	}
	d, err := time.ParseDuration(strings.Replace(m[1], "us", "µs", 1))
	if err != nil {
		t.Fatalf("latency %q: %v", m[1], err)
	}
	return d
}

func wrkBytes(t *testing.T, out string) float64 {
	t.Helper()
	m := regexp.MustCompile(`Transfer/sec:\s+([\d.]+)(\w+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no Transfer/sec in wrk output:\n%s", out)
	}
	var f float64
	fmt.Sscan(m[1], &f)
	mult := map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[m[2]]
	return f * mult
}
