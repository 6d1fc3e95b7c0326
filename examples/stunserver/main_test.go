package main

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/nat"
)

var stunserverBin = &proctest.Binary{Dir: "."}

func TestMain(m *testing.M) {
	code := leakcheck.Run(m)
	stunserverBin.Cleanup()
	os.Exit(code)
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

// TestServeAndProbe runs the binary on the nat.server section of a file,
// probes it with the nat client, and stops it with SIGTERM (after a SIGHUP,
// which it logs and survives).
func TestServeAndProbe(t *testing.T) {
	bin := stunserverBin.Path(t)
	p1, p2 := freePorts(t)
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(cfg, []byte("nat:\n  stun: [127.0.0.1]\n  server:\n    primary: 127.0.0.1:"+strconv.Itoa(p1)+
		"\n    alternate: 127.0.0.2:"+strconv.Itoa(p2)+"\n"), 0o644)
	p := proctest.Start(t, exec.Command(bin, "-config", cfg))
	n := p.WaitFor(t, 0, "stunserver ready", 10*time.Second)
	p.Signal(t, syscall.SIGHUP)
	p.WaitFor(t, n, "stunserver does not reload", 10*time.Second)
	c := &nat.Client{Servers: []string{"127.0.0.1:" + strconv.Itoa(p1)}, TCP: true, Timeout: time.Second}
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Server.RFC5780 != nat.Supported || rep.Filtering != nat.EndpointIndependent || rep.TCP.Mapping != nat.EndpointIndependent {
		t.Errorf("report against stunserver: %+v, tcp %+v", rep, rep.TCP)
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.WaitExit(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-primary", "nowhere"},
		{"-primary", "127.0.0.1:1", "-alternate", "x"},
		{"-config", "/nonexistent/file.yaml"},
		{"-bogus"},
		{"-primary", "127.0.0.1:1", "extra"},
	} {
		var stdout, stderr strings.Builder
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	var stdout, stderr strings.Builder
	if code := run([]string{"-primary", "127.0.0.1:1", "-check"}, &stdout, &stderr); code != 0 || stdout.String() != "configuration OK\n" {
		t.Errorf("-check: exit %d, %q", code, stdout.String())
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := run([]string{"-h"}, &stdout, &stderr); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	if out := stdout.String(); !strings.HasPrefix(out, description+"\n") || !strings.Contains(out, "-primary") ||
		!strings.Contains(out, "-shutdown-timeout") || !strings.Contains(out, "-config") {
		t.Errorf("-h printed %q", out)
	}
}
