package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
)

// Edge benchmarks: the same client work direct to a backend and through
// public proxy → edge → tunnel (QUIC or TLS/TCP) → agent → pool, all on
// loopback in one process. Compare the sub-benchmarks of one run:
//
//	go test -run '^$' -bench 'BenchmarkEdge' -benchtime 2s ./proxy/
//
// With sshd and ssh installed, "ssh-R" is the same through OpenSSH remote
// forwarding on loopback.
//
// On loopback every path is bound by this machine's CPU: client, edge,
// agent and backend share it, and the tunnel's rows pay two ends of
// AES-GCM and QUIC's packet work against a direct memcpy. The ratio a
// user sees is that on a real line: BenchmarkLabEdgeBulk (root) runs the
// same bulk copy across a natlab internet shaped to 1 Gbit/s and
// 200 Mbit/s:
//
//	go test -run '^$' -bench 'BenchmarkLabEdgeBulk' -benchtime 3s ./proxy/
//
// conns: a new TLS connection per op (full handshake with the backend,
// which answers and closes); bulk: MB/s read on one connection from a
// backend that writes without pause; ttfb: connect, send a ClientHello,
// first byte back; p50 and p99 reported in µs.

// rawBench is a backend that reads the client's hello, then either writes
// one byte (ttfb) or writes without end (bulk).
func rawBench(b *testing.B, site benchSite, helloLen int, bulk bool) string {
	b.Helper()
	l, err := site.listen(natlab.LAN1, "tcp4")
	if err != nil {
		b.Fatal(err)
	}
	netcoretest.Serve(b, l, func(c net.Conn) {
		if !bulk {
			buf := make([]byte, helloLen)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(buf[:1])
			io.Copy(io.Discard, c)
			return
		}
		// Only here the large buffer: allocated per connection it
		// would make the ttfb rows measure the garbage collector.
		buf := make([]byte, max(helloLen, 256<<10))
		if _, err := io.ReadFull(c, buf[:helloLen]); err != nil {
			return
		}
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	return l.Addr().String()
}

// benchSite says where the parts of an edge benchmark run: all on
// loopback (lab nil), or in a natlab lab as on the internet: the client on
// Peer, the edge (and sshd) on Server, the agent, the backend (and ssh) at
// home on LAN1.
type benchSite struct{ lab *natlab.Lab }

// listen listens on host's address, port 0.
func (s benchSite) listen(h natlab.Host, network string) (net.Listener, error) {
	if s.lab == nil {
		return net.Listen(network, "127.0.0.1:0")
	}
	return s.lab.Listen(h, network, s.lab.Addr(h).String()+":0")
}

func (s benchSite) listenPacket(h natlab.Host, network string) (net.PacketConn, error) {
	if s.lab == nil {
		return net.ListenPacket(network, "127.0.0.1:0")
	}
	return s.lab.ListenPacket(h, network, s.lab.Addr(h).String()+":0")
}

// dialer returns a DialContext from host.
func (s benchSite) dialer(h natlab.Host) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.lab == nil {
		var d net.Dialer
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return s.lab.Dial(ctx, h, network, addr)
	}
}

func (s benchSite) command(h natlab.Host, name string, args ...string) *exec.Cmd {
	if s.lab == nil {
		return exec.Command(name, args...)
	}
	return s.lab.Command(h, name, args...)
}

// benchPath is one way to the backend: the address to dial and the
// processes other than this one that carry it (their CPU counts too).
type benchPath struct {
	name, addr string
	pids       []int
}

// cpuMeter reports the CPU time of the run per op ("cpu-µs/op"): this
// process (client, backend and, for our rows, proxy, edge and agent) plus
// pids and their descendants (sshd forks a process per connection).
func cpuMeter(b *testing.B, pids []int) func() {
	start := cpuTime(pids)
	return func() {
		b.ReportMetric(float64((cpuTime(pids)-start).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

func cpuTime(pids []int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	seen := map[int]bool{}
	for len(pids) > 0 {
		pid := pids[0]
		pids = pids[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			// Fields after the command's closing parenthesis: utime and
			// stime are the 12th and 13th, in clock ticks (100 per second).
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 12 {
					u, _ := strconv.ParseInt(f[11], 10, 64)
					s, _ := strconv.ParseInt(f[12], 10, 64)
					t += time.Duration(u+s) * 10 * time.Millisecond
				}
			}
		}
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
		for _, f := range tasks {
			c, _ := os.ReadFile(f)
			for _, w := range strings.Fields(string(c)) {
				if n, err := strconv.Atoi(w); err == nil {
					pids = append(pids, n)
				}
			}
		}
	}
	return t
}

// benchPaths returns the address to dial for each path to backend.
func benchPaths(b *testing.B, site benchSite, name, backend string) []benchPath {
	paths := []benchPath{{name: "direct", addr: backend}}
	// "proxy": the public proxy straight to the backend, no tunnel: what
	// the SNI path costs by itself, so that the tunnel rows' excess over it
	// is the tunnel's.
	{
		pool := &Pool{Backends: []string{backend}, DialContext: site.dialer(natlab.Server), HealthCheck: HealthCheck{Interval: -1}}
		addr := benchPublic(b, site, []Route{{Protocol: ProtocolTLS, Host: name, Target: pool}, {Protocol: ProtocolHTTP, Host: name, Target: pool}})
		paths = append(paths, benchPath{name: "proxy", addr: addr})
	}
	for _, tr := range []TunnelTransport{TransportQUIC, TransportTCP} {
		edgeKey, homeKey := testKey(b), testKey(b)
		e := &Edge{Key: edgeKey, Agents: []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: []string{name}, MaxStreams: -1}}}
		pc, err := site.listenPacket(natlab.Server, "udp4")
		if err != nil {
			b.Fatal(err)
		}
		l, err := site.listen(natlab.Server, "tcp4")
		if err != nil {
			b.Fatal(err)
		}
		ea := serveEdge(b, e, pc, l)
		addr := benchPublic(b, site, e.Routes())
		home := site.dialer(natlab.LAN1)
		a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{name}, Transport: tr, MaxStreams: -1,
			DialContext: home,
			Target:      &Pool{Backends: []string{backend}, DialContext: home, HealthCheck: HealthCheck{Interval: -1}}}
		if site.lab != nil {
			a.ListenPacket = func(network, _ string) (net.PacketConn, error) { return site.listenPacket(natlab.LAN1, network) }
		}
		startAgent(b, a)
		paths = append(paths, benchPath{name: tr.String(), addr: addr})
	}
	if addr, pids, ok := sshForward(b, site, backend); ok {
		paths = append(paths, benchPath{name: "ssh-R", addr: addr, pids: pids})
	}
	return paths
}

// sshForward runs OpenSSH's sshd on loopback and `ssh -R` to it, the
// universal baseline for publishing a home server (Debian's
// openssh-server), and returns the forwarded port's address. Without sshd
// and ssh the path is left out, with a log line.
func sshForward(b *testing.B, site benchSite, backend string) (string, []int, bool) {
	b.Helper()
	sshd, err1 := exec.LookPath("sshd")
	if err1 != nil {
		sshd, err1 = exec.LookPath("/usr/sbin/sshd")
	}
	ssh, err2 := exec.LookPath("ssh")
	keygen, err3 := exec.LookPath("ssh-keygen")
	if err := errors.Join(err1, err2, err3); err != nil {
		b.Logf("ssh -R baseline left out (apt-get install openssh-server): %v", err)
		return "", nil, false
	}
	dir := b.TempDir()
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			b.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pubKey, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pubKey, 0o600); err != nil {
		b.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	// sshd cannot bind port 0 and report it: take a free port (a
	// benchmark, not a test; a clash shows as a failed start).
	l, err := site.listen(natlab.Server, "tcp4")
	if err != nil {
		b.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	start := func(h natlab.Host, name string, args []string, want *regexp.Regexp) (*exec.Cmd, []string) {
		cmd := site.command(h, name, args...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		found := make(chan []string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			var log []string
			for sc.Scan() {
				log = append(log, sc.Text())
				if m := want.FindStringSubmatch(sc.Text()); m != nil {
					found <- m
					io.Copy(io.Discard, stderr)
					return
				}
			}
			found <- append([]string{"not found"}, log...)
		}()
		select {
		case m := <-found:
			if m[0] == "not found" {
				b.Fatalf("%s: %v", name, m[1:])
			}
			return cmd, m
		case <-time.After(10 * time.Second):
			b.Fatalf("%s did not start", name)
		}
		return nil, nil
	}
	sshdCmd, _ := start(natlab.Server, sshd, []string{"-D", "-e", "-f", "/dev/null", "-o", "ListenAddress=" + net.JoinHostPort(host, port),
		"-o", "HostKey=" + filepath.Join(dir, "host"), "-o", "AuthorizedKeysFile=" + filepath.Join(dir, "authorized_keys"),
		"-o", "StrictModes=no", "-o", "PidFile=none", "-o", "UsePAM=no", "-o", "PermitRootLogin=prohibit-password",
		"-o", "MaxStartups=1000", "-o", "GatewayPorts=clientspecified"}, regexp.MustCompile(`Server listening on`))
	sshCmd, m := start(natlab.LAN1, ssh, []string{"-N", "-v", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-i", filepath.Join(dir, "user"), "-p", port,
		"-R", host + ":0:" + backend, host}, regexp.MustCompile(`Allocated port (\d+) for remote forward`))
	return net.JoinHostPort(host, m[1]), []int{sshdCmd.Process.Pid, sshCmd.Process.Pid}, true
}

func BenchmarkEdgeConns(b *testing.B) {
	be := newTLSBackend(b, "blog.example.com")
	for _, p := range benchPaths(b, benchSite{}, "blog.example.com", be.addr) {
		b.Run(p.name, func(b *testing.B) {
			defer cpuMeter(b, p.pids)()
			for b.Loop() {
				if got, err := dialTLS(b.Context(), p.addr, "blog.example.com", be.roots); err != nil || got != "blog.example.com " {
					b.Fatalf("%q, %v", got, err)
				}
			}
		})
	}
}

func BenchmarkEdgeBulk(b *testing.B) {
	hello := makeHello(b, &tls.Config{ServerName: "bulk.example.com"})
	be := rawBench(b, benchSite{}, len(hello), true)
	for _, p := range benchPaths(b, benchSite{}, "bulk.example.com", be) {
		b.Run(p.name, func(b *testing.B) { benchBulk(b, benchSite{}, p, hello) })
	}
}

// BenchmarkLabEdgeBulk is BenchmarkEdgeBulk across a natlab internet: the
// client on Peer, the edge on Server, the agent and the backend at home
// behind a router (NoNAT, so that the direct path exists) whose line is
// shaped to a rate both ways by tbf. Each direction crosses the shaped line
// once, direct or through the tunnel: the ratio is what a user of such a
// line sees, with the crypto of both ends on this machine's two cores.
// Needs root, ip, nft and tc (HAIRPIN_LAB=required fails instead of
// skipping):
//
//	go test -run '^$' -bench 'BenchmarkLabEdgeBulk' -benchtime 3s ./proxy/
func BenchmarkLabEdgeBulk(b *testing.B) {
	interop.Need(b, "tc")
	lab := natlab.New(b, natlab.Config{Kind: natlab.NoNAT})
	site := benchSite{lab}
	hello := makeHello(b, &tls.Config{ServerName: "bulk.example.com"})
	be := rawBench(b, site, len(hello), true)
	paths := benchPaths(b, site, "bulk.example.com", be)
	// burst: at least the rate for a millisecond, and a few 64 KiB GSO
	// segments; latency: the queue a home router's shaper keeps.
	for _, line := range []struct{ rate, burst string }{{"1gbit", "256kb"}, {"200mbit", "128kb"}} {
		for _, link := range []struct {
			h   natlab.Host
			dev string
		}{{natlab.Router, "wan"}, {natlab.Internet, "sitea"}} {
			if out, err := lab.Command(link.h, "tc", "qdisc", "replace", "dev", link.dev, "root", "tbf",
				"rate", line.rate, "burst", line.burst, "latency", "20ms").CombinedOutput(); err != nil {
				b.Fatalf("tc on %v: %v %s", link.h, err, out)
			}
		}
		for _, p := range paths {
			b.Run(line.rate+"/"+p.name, func(b *testing.B) { benchBulk(b, site, p, hello) })
		}
	}
}

// benchBulk reads 1 MiB per op on one connection from the client's host.
func benchBulk(b *testing.B, site benchSite, p benchPath, hello []byte) {
	c, err := site.dialer(natlab.Peer)(b.Context(), "tcp4", p.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(hello); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	defer cpuMeter(b, p.pids)()
	for b.Loop() {
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEdgeTTFB(b *testing.B) {
	hello := makeHello(b, &tls.Config{ServerName: "ttfb.example.com"})
	be := rawBench(b, benchSite{}, len(hello), false)
	for _, p := range benchPaths(b, benchSite{}, "ttfb.example.com", be) {
		b.Run(p.name, func(b *testing.B) { benchTTFB(b, p, hello) })
	}
}

// benchTTFB measures, per op, a new connection to p that sends request and
// reads the first byte back; it reports the p50 and p99 of those times.
func benchTTFB(b *testing.B, p benchPath, request []byte) {
	var lat []time.Duration
	one := make([]byte, 1)
	defer cpuMeter(b, p.pids)()
	for b.Loop() {
		start := time.Now()
		c, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(request); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		c.Close()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// benchPublic serves a public Proxy with routes on the site's Server host,
// without the per-source limits a benchmark's one client would hit, and
// returns its address.
func benchPublic(b *testing.B, site benchSite, routes []Route) string {
	p := &Proxy{MaxPeeksPerSource: -1, MaxPeeksPerNetwork: -1, MaxConnsPerSource: -1}
	if err := p.SetRoutes(routes); err != nil {
		b.Fatal(err)
	}
	pl, err := site.listen(natlab.Server, "tcp4")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(pl) }()
	b.Cleanup(func() { p.Close(); <-done })
	return pl.Addr().String()
}
