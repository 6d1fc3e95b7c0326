package nat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Load shape of the server benchmarks: many sources, so that the server's
// default per-source rate limit (DefaultRateLimit) stays on and is paid for
// on every request without being what limits the rate: 512 sources with one
// request in flight each stay under 200/s per source below 100k answers/s.
const (
	benchSources = 512
	benchWindow  = 1
)

// loadgen sends Binding requests to dst from conns sockets, each on its own
// loopback IP (127.1.x.y), keeping window requests in flight on each, until
// ctx is done or total answers arrived (total 0: no limit). It returns the
// number of answers. The same generator measures our server and coturn.
func loadgen(ctx context.Context, dst netip.AddrPort, conns, window int, total uint64) (uint64, error) {
	var answers atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1))})
		if err != nil {
			return 0, err
		}
		wg.Go(func() {
			defer c.Close()
			req := request{txid: newTxID()}.encode()
			send := func() {
				// A fresh transaction ID per request, as a real client sends.
				copy(req[8:20], newTxIDFast())
				c.WriteToUDPAddrPort(req, dst)
			}
			for range window {
				send()
			}
			buf := make([]byte, 1500)
			for ctx.Err() == nil {
				if total > 0 && answers.Load() >= total {
					return
				}
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				n, _, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						for range window { // lost: refill the window
							send()
						}
						continue
					}
					errs <- err
					return
				}
				if n >= 20 && buf[0] == 0x01 && buf[1] == 0x01 {
					answers.Add(1)
				}
				send()
			}
		})
	}
	wg.Wait()
	close(errs)
	return answers.Load(), <-errs
}

var fastID atomic.Uint64

// newTxIDFast returns a unique transaction ID without crypto/rand, so the
// load generator measures the server, not itself.
func newTxIDFast() []byte {
	id := make([]byte, 12)
	v := fastID.Add(1)
	for i := range 8 {
		id[i] = byte(v >> (8 * i))
	}
	return id
}

// serveEnv makes the test binary run our server instead of tests: its value
// is "primary,alternate".
const serveEnv = "HAIRPIN_NAT_SERVE"

func serveForBenchmark(addrs string) int {
	p, a, _ := strings.Cut(addrs, ",")
	s := &Server{}
	s.Alternate, _ = netip.ParseAddrPort(a)
	if err := s.ListenAndServe(p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startOursProcess runs our server in a child process (the test binary
// itself), so that it does not share a Go runtime with the load generator:
// the same footing coturn has.
func startOursProcess(t testing.TB) netip.AddrPort {
	pcs := listenFour(t)
	p := pcs[0].LocalAddr().(*net.UDPAddr).AddrPort()
	o := pcs[3].LocalAddr().(*net.UDPAddr).AddrPort()
	for _, pc := range pcs {
		pc.Close()
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), serveEnv+"="+p.String()+","+o.String())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitSTUN(ctx, func() (net.PacketConn, error) { return net.ListenPacket("udp4", "127.0.0.1:0") }, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func benchServer(b *testing.B, dst netip.AddrPort) {
	b.ResetTimer()
	start := time.Now()
	n, err := loadgen(b.Context(), dst, benchSources, benchWindow, uint64(b.N))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "resp/s")
}

// BenchmarkServerBinding measures Binding answers per second with the same
// load generator against our server (default rate limiter on) and against
// coturn.
func BenchmarkServerBinding(b *testing.B) {
	b.Run("ours", func(b *testing.B) {
		// The zero Server: its default rate limiter is on.
		s := &Server{}
		addrs := startServer(b, s)
		benchServer(b, addrs[0])
		b.ReportMetric(float64(s.Stats().RateLimited)/float64(b.N), "limited/op")
	})
	b.Run("ours-process", func(b *testing.B) {
		benchServer(b, startOursProcess(b))
	})
	b.Run("coturn", func(b *testing.B) {
		benchServer(b, coturnPrimary(b))
	})
}

// TestPeerBenchmark runs both for a few seconds and reports the ratio. It
// only runs with HAIRPIN_BENCH=1.
func TestPeerBenchmark(t *testing.T) {
	if os.Getenv("HAIRPIN_BENCH") != "1" {
		t.Skip("set HAIRPIN_BENCH=1 to compare with coturn")
	}
	const d = 3 * time.Second
	rate := func(dst netip.AddrPort) float64 {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		start := time.Now()
		n, err := loadgen(ctx, dst, benchSources, benchWindow, 0)
		if err != nil {
			t.Fatal(err)
		}
		return float64(n) / time.Since(start).Seconds()
	}
	// Alternate, twice each, so a burst of load from elsewhere on the host
	// does not favour one side.
	oursAddr, coturnAddr := startOursProcess(t), coturnPrimary(t)
	var ours, theirs float64
	for range 2 {
		ours += rate(oursAddr) / 2
		theirs += rate(coturnAddr) / 2
	}
	t.Logf("Binding answers/s on loopback (server in its own process, same load generator): ours %.0f, coturn %.0f, ratio %.2f",
		ours, theirs, ours/theirs)
}

func coturnPrimary(t testing.TB) netip.AddrPort {
	p, _ := startCoturn(t)
	return p
}
