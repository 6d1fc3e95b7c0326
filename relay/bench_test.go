package relay

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/pion/stun/v3"
)

// cpuSelf returns this process's user+system CPU time.
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf returns a process's user+system CPU time from /proc.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

// waitSTUN waits until a STUN server answers Binding on addr.
func waitSTUN(t testing.TB, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for range 100 {
		_, _ = c.Write(m.Raw)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // refused: not listening yet
	}
	t.Fatalf("no STUN answer from %s", addr)
}

// TestBenchmarkVsCoturn runs the same turnutils_uclient load against our
// relay and against coturn's turnserver, one after the other, and reports
// packets per second, loss, RTT and CPU. HAIRPIN_BENCH=1 enables it;
// HAIRPIN_BENCH_ARGS overrides the load (default "-m 50 -n 2000 -l 160 -z 5").
func TestBenchmarkVsCoturn(t *testing.T) {
	if os.Getenv("HAIRPIN_BENCH") != "1" {
		t.Skip("set HAIRPIN_BENCH=1 to compare with coturn")
	}
	paths := interop.Need(t, "turnutils_uclient", "turnutils_peer", "turnserver")
	peerPort := startTurnutilsPeer(t, paths["turnutils_peer"])
	load := strings.Fields("-m 50 -n 2000 -l 160 -z 5")
	if v := os.Getenv("HAIRPIN_BENCH_ARGS"); v != "" {
		load = strings.Fields(v)
	}
	run := func(port int) (uclientResult, time.Duration) {
		args := append([]string{"-W", "s3cret", "-u", "bench", "-c", "-e", "127.0.0.1", "-r", strconv.Itoa(peerPort),
			"-p", strconv.Itoa(port)}, load...)
		start := time.Now()
		r := runUclient(t, paths["turnutils_uclient"], append(args, "127.0.0.1")...)
		return r, time.Since(start)
	}
	report := func(name string, r uclientResult, wall, cpu time.Duration) float64 {
		pps := float64(r.sent+r.received) / wall.Seconds()
		loss := 0.0
		if r.sent > 0 {
			loss = 100 * float64(r.sent-r.received) / float64(r.sent)
		}
		t.Logf("%-8s sent %d recv %d loss %.2f%% rtt %.2f ms wall %v relay-CPU %v (%.0f pps through the relay, %.1f µs CPU/pkt)",
			name, r.sent, r.received, loss, r.rtt, wall.Round(time.Millisecond), cpu.Round(time.Millisecond), pps,
			float64(cpu.Microseconds())/float64(max(2*(r.sent+r.received), 1)))
		if r.sent == 0 {
			t.Errorf("%s: nothing sent:\n%s", name, tail(r.out))
		}
		return float64(cpu) / float64(max(r.sent+r.received, 1))
	}

	// Ours: SO_REUSEPORT readers on one port, defaults except loopback peers.
	port := freeUDPTCPPort(t)
	// One benchmark user from one address exceeds the per-user allocation
	// limit on purpose; lift it, as an operator would for a load test.
	s := &Server{Realm: "hairpin.test", Secrets: []string{"s3cret"}, Logger: quiet, Limits: Limits{AllocationsPerUser: -1},
		Peers: PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}
	s.ReadBatch, _ = strconv.Atoi(os.Getenv("HAIRPIN_BENCH_BATCH"))
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe(net.JoinHostPort("127.0.0.1", strconv.Itoa(port))) }()
	waitSTUN(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	cpu0 := cpuSelf()
	ours, oursWall := run(port)
	oursCPU := cpuSelf() - cpu0
	s.Close()
	<-errc
	oursPer := report("hairpin", ours, oursWall, oursCPU)
	t.Logf("hairpin stats: %+v", s.Stats())

	// coturn, same load.
	cport := freeUDPTCPPort(t)
	cmd := exec.Command(paths["turnserver"], "-n", "--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout",
		"--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", strconv.Itoa(cport),
		"--min-port", "49152", "--max-port", "65535", "--realm", "hairpin.test",
		"--use-auth-secret", "--static-auth-secret", "s3cret", "--allow-loopback-peers", "--simple-log")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	waitSTUN(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(cport)))
	c0 := cpuOf(cmd.Process.Pid)
	theirs, theirsWall := run(cport)
	theirsCPU := cpuOf(cmd.Process.Pid) - c0
	theirsPer := report("coturn", theirs, theirsWall, theirsCPU)
	t.Logf("%s", fmt.Sprintf("ratio hairpin/coturn: received %.2f, CPU per packet %.2f",
		float64(ours.received)/float64(max(theirs.received, 1)), oursPer/theirsPer))
}

// BenchmarkChannelData measures one ChannelData round through the relay:
// client → relay → peer, and peer → relay → client. Allocations are those
// of the whole process per round (the client and peer here allocate none).
func BenchmarkChannelData(b *testing.B) {
	s := &Server{Users: map[string]string{"a": "pw"}, Logger: quiet, Limits: Limits{Bandwidth: -1},
		Peers: PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}
	c := dialRaw(b, "udp", serve(b, s, "udp"), "a", "pw")
	if c.allocate() != 0 {
		b.Fatal("allocate")
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	peer := netcore.AddrPort(pc.LocalAddr())
	if c.channelBind(0x4000, peer) != 0 {
		b.Fatal("channel bind")
	}
	msg := make([]byte, 4+160)
	msg[0], msg[1], msg[2], msg[3] = 0x40, 0, 0, 160
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Time{})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.conn.Write(msg); err != nil {
			b.Fatal(err)
		}
		_, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:160], from); err != nil {
			b.Fatal(err)
		}
		if _, err := c.conn.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// freeUDPTCPPort picks a loopback port free for UDP and TCP at once, for a
// server that listens on both (ours and coturn): a free UDP port says
// nothing about TCP.
func freeUDPTCPPort(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return 0
}

// BenchmarkAllocationMemory reports the server's memory per UDP allocation
// with one permission and one channel bound (a WebRTC call leg): the growth
// of the Go heap and goroutine stacks after a GC, divided by the number of
// allocations, as heap-B/alloc and stack-B/alloc. The clients are dialled
// before the first reading, so their sockets are not counted; socket
// buffers are the kernel's, charged only while datagrams queue.
func BenchmarkAllocationMemory(b *testing.B) {
	const n = 500
	var heap, stack float64
	for b.Loop() {
		s := &Server{Users: map[string]string{"a": "pw"}, Logger: quiet,
			Limits: Limits{AllocationsPerUser: -1, UnauthorizedBurst: -1},
			Peers:  PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}
		addr := serve(b, s, "udp")
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		peer := netcore.AddrPort(pc.LocalAddr())
		clients := make([]*rawClient, n)
		for i := range clients {
			clients[i] = dialRaw(b, "udp", addr, "a", "pw")
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, c := range clients {
			if c.allocate() != 0 || c.channelBind(0x4000, peer) != 0 {
				b.Fatal("allocate and channel bind")
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / n
		stack = float64(int64(after.StackInuse)-int64(before.StackInuse)) / n
		b.StopTimer()
		for _, c := range clients {
			c.conn.Close()
		}
		pc.Close()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(heap, "heap-B/alloc")
	b.ReportMetric(stack, "stack-B/alloc")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkChannelDataInProcess measures ChannelData from one client to
// another through two allocations of the same relay, one way.
func BenchmarkChannelDataInProcess(b *testing.B) {
	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Logger: quiet, Limits: Limits{Bandwidth: -1},
		Public: netip.MustParseAddr("203.0.113.7")}
	addr := serve(b, s, "udp")
	ca, cb := dialRaw(b, "udp", addr, "a", "pw"), dialRaw(b, "udp", addr, "b", "pw")
	if ca.allocate() != 0 || cb.allocate() != 0 || ca.channelBind(0x4000, cb.relayed) != 0 ||
		cb.channelBind(0x4001, ca.relayed) != 0 {
		b.Fatal("allocate and channel bind")
	}
	msg := make([]byte, 4+160)
	msg[0], msg[1], msg[2], msg[3] = 0x40, 0, 0, 160
	buf := make([]byte, 2048)
	_ = cb.conn.SetReadDeadline(time.Time{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.conn.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := cb.conn.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
