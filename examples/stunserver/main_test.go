package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/nat"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// syncBuffer is a bytes.Buffer safe for the server's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePorts returns two ports free for UDP and TCP on both 127.0.0.1 and
// 127.0.0.2 right now.
func freePorts(t *testing.T) (int, int) {
	ip1, ip2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	for range 50 {
		a, _ := net.ListenUDP("udp", &net.UDPAddr{IP: ip1.AsSlice()})
		b, _ := net.ListenUDP("udp", &net.UDPAddr{IP: ip1.AsSlice()})
		p1, p2 := uint16(a.LocalAddr().(*net.UDPAddr).Port), uint16(b.LocalAddr().(*net.UDPAddr).Port)
		a.Close()
		b.Close()
		ok := true
		for _, ap := range []netip.AddrPort{
			netip.AddrPortFrom(ip1, p1), netip.AddrPortFrom(ip1, p2), netip.AddrPortFrom(ip2, p1), netip.AddrPortFrom(ip2, p2),
		} {
			u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				ok = false
				break
			}
			u.Close()
			l, err := net.Listen("tcp", ap.String())
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return int(p1), int(p2)
		}
	}
	t.Skip("no free ports")
	return 0, 0
}

func TestServeAndProbe(t *testing.T) {
	p1, p2 := freePorts(t)
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(cfg, []byte("nat:\n  stun: [127.0.0.1]\n  server:\n    primary: 127.0.0.1:"+strconv.Itoa(p1)+
		"\n    alternate: 127.0.0.2:"+strconv.Itoa(p2)+"\n"), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-config", cfg}, &stderr) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit %d: %s", code, stderr.String())
		}
	}()
	c := &nat.Client{Servers: []string{"127.0.0.1:" + strconv.Itoa(p1)}, TCP: true, Timeout: time.Second}
	var rep *nat.Report
	var err error
	for range 10 { // the server may still be binding
		if rep, err = c.Probe(ctx); err == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("stunserver exited with %d: %s", code, stderr.String())
		default:
		}
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if rep.Server.RFC5780 != nat.Supported || rep.Filtering != nat.EndpointIndependent || rep.TCP.Mapping != nat.EndpointIndependent {
		t.Errorf("report against stunserver: %+v, tcp %+v", rep, rep.TCP)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-primary", "nowhere"},
		{"-primary", "127.0.0.1:1", "-alternate", "x"},
		{"-config", "/nonexistent/file.yaml"},
		{"-bogus"},
	} {
		var stderr syncBuffer
		if code := run(t.Context(), args, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

func TestHelp(t *testing.T) {
	var errb bytes.Buffer
	if code := run(t.Context(), []string{"-h"}, &errb); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	if !strings.HasPrefix(errb.String(), "stunserver runs") || !strings.Contains(errb.String(), "-primary") {
		t.Errorf("-h printed %q", errb.String())
	}
}
