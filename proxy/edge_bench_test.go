package proxy

import (
	"bufio"
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
	"sync"
	"testing"
	"time"
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
// conns: a new TLS connection per op (full handshake with the backend,
// which answers and closes); bulk: MB/s read on one connection from a
// backend that writes without pause; ttfb: connect, send a ClientHello,
// first byte back; p50 and p99 reported in µs.

// rawBench is a backend that reads the client's hello, then either writes
// one byte (ttfb) or writes without end (bulk).
func rawBench(b *testing.B, helloLen int, bulk bool) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, max(helloLen, 256<<10))
				if _, err := io.ReadFull(c, buf[:helloLen]); err != nil {
					return
				}
				if !bulk {
					c.Write(buf[:1])
					io.Copy(io.Discard, c)
					return
				}
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			})
		}
	})
	b.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String()
}

// benchPaths returns the address to dial for each path to backend.
func benchPaths(b *testing.B, name, backend string) []struct{ name, addr string } {
	paths := []struct{ name, addr string }{{"direct", backend}}
	for _, tr := range []TunnelTransport{TransportQUIC, TransportTCP} {
		edgeKey, homeKey := testKey(b), testKey(b)
		e := &Edge{Key: edgeKey, Agents: []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: []string{name}, MaxStreams: -1}}}
		ea := startEdge(b, e)
		p := &Proxy{MaxPeeksPerSource: -1, MaxPeeksPerNetwork: -1, MaxConnsPerSource: -1}
		if err := p.SetRoutes(e.Routes()); err != nil {
			b.Fatal(err)
		}
		pub := serve(b, p)
		a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{name}, Transport: tr, MaxStreams: -1,
			Target: &Pool{Backends: []string{backend}, HealthCheck: HealthCheck{Interval: -1}}}
		startAgent(b, a)
		paths = append(paths, struct{ name, addr string }{tr.String(), pub})
	}
	if addr, ok := sshForward(b, backend); ok {
		paths = append(paths, struct{ name, addr string }{"ssh-R", addr})
	}
	return paths
}

// sshForward runs OpenSSH's sshd on loopback and `ssh -R` to it, the
// universal baseline for publishing a home server (Debian's
// openssh-server), and returns the forwarded port's address. Without sshd
// and ssh the path is left out, with a log line.
func sshForward(b *testing.B, backend string) (string, bool) {
	b.Helper()
	sshd, err1 := exec.LookPath("sshd")
	if err1 != nil {
		sshd, err1 = exec.LookPath("/usr/sbin/sshd")
	}
	ssh, err2 := exec.LookPath("ssh")
	keygen, err3 := exec.LookPath("ssh-keygen")
	if err := errors.Join(err1, err2, err3); err != nil {
		b.Logf("ssh -R baseline left out (apt-get install openssh-server): %v", err)
		return "", false
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	start := func(name string, args []string, want *regexp.Regexp) (*exec.Cmd, []string) {
		cmd := exec.Command(name, args...)
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
	start(sshd, []string{"-D", "-e", "-f", "/dev/null", "-o", "ListenAddress=127.0.0.1:" + port,
		"-o", "HostKey=" + filepath.Join(dir, "host"), "-o", "AuthorizedKeysFile=" + filepath.Join(dir, "authorized_keys"),
		"-o", "StrictModes=no", "-o", "PidFile=none", "-o", "UsePAM=no", "-o", "PermitRootLogin=prohibit-password",
		"-o", "MaxStartups=1000"}, regexp.MustCompile(`Server listening on`))
	_, m := start(ssh, []string{"-N", "-v", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-i", filepath.Join(dir, "user"), "-p", port,
		"-R", "127.0.0.1:0:" + backend, "127.0.0.1"}, regexp.MustCompile(`Allocated port (\d+) for remote forward`))
	return "127.0.0.1:" + m[1], true
}

func BenchmarkEdgeConns(b *testing.B) {
	be := newTLSBackend(b, "blog.example.com")
	for _, p := range benchPaths(b, "blog.example.com", be.addr) {
		b.Run(p.name, func(b *testing.B) {
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
	be := rawBench(b, len(hello), true)
	for _, p := range benchPaths(b, "bulk.example.com", be) {
		b.Run(p.name, func(b *testing.B) {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(hello); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEdgeTTFB(b *testing.B) {
	hello := makeHello(b, &tls.Config{ServerName: "ttfb.example.com"})
	be := rawBench(b, len(hello), false)
	for _, p := range benchPaths(b, "ttfb.example.com", be) {
		b.Run(p.name, func(b *testing.B) {
			var lat []time.Duration
			one := make([]byte, 1)
			for b.Loop() {
				start := time.Now()
				c, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(hello); err != nil {
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
		})
	}
}
