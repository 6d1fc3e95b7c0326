package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/internal/natlab"
	"github.com/hairpin-go/hairpin/nat"
)

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		// Re-executed inside a lab namespace: be natcheck.
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	leakcheck.Main(m)
}

// mainEnv makes the test binary run natcheck's main instead of the tests.
const mainEnv = "HAIRPIN_NATCHECK_MAIN"

// TestLab runs natcheck as a program on a LAN host of the NAT lab against
// our server on the lab's Server host, and checks its JSON with the ground
// truth, including the lifetime search against a 4 s router timeout.
func TestLab(t *testing.T) {
	interop.NeedRoot(t)
	for _, k := range []natlab.Kind{natlab.PortRestricted, natlab.Symmetric} {
		t.Run(k.String(), func(t *testing.T) {
			lab := natlab.New(t, natlab.Config{Kind: k, UDPTimeout: 4 * time.Second})
			srv := labSTUN(t, lab)

			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := lab.CommandContext(ctx, natlab.LAN1, os.Args[0], "-json", "-lifetime", srv.String())
			cmd.Env = append(os.Environ(), mainEnv+"=1")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("natcheck: %v\n%s\n%s", err, out, stderr.String())
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got["mapping"] != k.Mapping().String() || got["filtering"] != k.Filtering().String() ||
				got["behindNAT"] != true || got["public"] == "" {
				t.Errorf("natcheck in a %v lab:\n%s", k, out)
			}
			if k == natlab.PortRestricted {
				// EIM: the lifetime search runs; the router forgets after 4 s.
				ns, _ := got["mappingLifetime"].(float64)
				if life := time.Duration(ns); life <= 0 || life > 4*time.Second {
					t.Errorf("mappingLifetime %v (router timeout 4s)\n%s", got["mappingLifetime"], out)
				}
				// Progress on stderr while it runs, one line per idle time
				// checked; stdout is the JSON alone (parsed above).
				for _, want := range []string{"natcheck: lifetime: idle 2s: mapping alive\n", ": mapping gone\n"} {
					if !strings.Contains(stderr.String(), want) {
						t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
					}
				}
			}
		})
	}
}

// labSTUN runs an RFC 5780 server on the lab's Server host and returns its
// primary address.
func labSTUN(t *testing.T, lab *natlab.Lab) netip.AddrPort {
	t.Helper()
	a1, a2 := lab.ServerAddrs()
	s := &nat.Server{Primary: netip.AddrPortFrom(a1, 3478), Alternate: netip.AddrPortFrom(a2, 3479)}
	var pcs []net.PacketConn
	for _, a := range []netip.AddrPort{
		s.Primary, netip.AddrPortFrom(a1, 3479), netip.AddrPortFrom(a2, 3478), s.Alternate,
	} {
		pc, err := lab.ListenPacket(natlab.Server, "udp4", a.String())
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeRFC5780(pcs[0], pcs[1], pcs[2], pcs[3]) }()
	t.Cleanup(func() { s.Close(); <-done })
	return s.Primary
}

// TestLabMapTest runs natcheck -map-test on a LAN host behind a router with
// miniupnpd: the temporary mapping is made, reached from the STUN server's
// other address, and deleted at exit. Without a port-mapping daemon the line
// says no mapping was made, on one line.
func TestLabMapTest(t *testing.T) {
	interop.Need(t, "miniupnpd")
	for _, c := range []struct {
		name    string
		daemon  bool
		mapping string
		want    *regexp.Regexp
	}{
		{"miniupnpd", true, "port mapping: PCP yes / NAT-PMP yes / UPnP IGD v2 at 192.168.1.1",
			regexp.MustCompile(`(?m)^port mapping test: UDP 203\.0\.113\.\d+:\d+ -> :\d+ by PCP: reachable from the internet \(answer from 198\.51\.100\.\d+:3479, `)},
		{"no daemon", false, "port mapping: ",
			regexp.MustCompile(`(?m)^port mapping test: no mapping: nat: mapping udp port \d+: nat: the router answers no port-mapping protocol; PCP: no answer .*; NAT-PMP: no answer .*; UPnP IGD: .*$`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted})
			srv := labSTUN(t, lab)
			var d *natlab.MiniUPnPd
			if c.daemon {
				d = lab.StartMiniUPnPd(natlab.MiniUPnPdConfig{STUN: srv})
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := lab.CommandContext(ctx, natlab.LAN1, os.Args[0], "-map-test", "-no-hairpin", "-timeout", "2s", srv.String())
			cmd.Env = append(os.Environ(), mainEnv+"=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("natcheck: %v\n%s", err, out)
			}
			if !c.want.Match(out) {
				t.Errorf("output does not match %v:\n%s", c.want, out)
			}
			if !strings.Contains(string(out), c.mapping) {
				t.Errorf("no %q line:\n%s", c.mapping, out)
			}
			if d == nil {
				return
			}
			// Deleted at exit: miniupnpd logs the removal (its log is read
			// as it comes, so give it a moment).
			removed := regexp.MustCompile(`PCP: UDP port \d+ mapping removed`)
			deadline := time.Now().Add(5 * time.Second)
			for !removed.MatchString(d.Log()) {
				if time.Now().After(deadline) {
					t.Fatalf("miniupnpd log lacks the removal:\n%s", d.Log())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// startServer runs an RFC 5780 server on 127.0.0.1 and 127.0.0.2 (UDP and
// TCP) with ports the system picked.
func startServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ip1, ip2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	for range 50 {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip1.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip1.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		p1, p2 := a.LocalAddr().(*net.UDPAddr).Port, b.LocalAddr().(*net.UDPAddr).Port
		c, err1 := net.ListenUDP("udp", &net.UDPAddr{IP: ip2.AsSlice(), Port: p1})
		d, err2 := net.ListenUDP("udp", &net.UDPAddr{IP: ip2.AsSlice(), Port: p2})
		var lns []net.Listener
		ok := err1 == nil && err2 == nil
		for _, ap := range []netip.AddrPort{
			netip.AddrPortFrom(ip1, uint16(p1)), netip.AddrPortFrom(ip1, uint16(p2)),
			netip.AddrPortFrom(ip2, uint16(p1)), netip.AddrPortFrom(ip2, uint16(p2)),
		} {
			l, err := net.Listen("tcp", ap.String())
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, l)
		}
		if !ok {
			a.Close()
			b.Close()
			if err1 == nil {
				c.Close()
			}
			if err2 == nil {
				d.Close()
			}
			for _, l := range lns {
				l.Close()
			}
			continue
		}
		s := &nat.Server{}
		done := make(chan error, 5)
		go func() { done <- s.ServeRFC5780(a, b, c, d) }()
		for _, l := range lns {
			go func() { done <- s.Serve(l) }()
		}
		t.Cleanup(func() {
			s.Close()
			for range 5 {
				if err := <-done; !errors.Is(err, nat.ErrServerClosed) {
					t.Error(err)
				}
			}
		})
		return netip.AddrPortFrom(ip1, uint16(p1))
	}
	t.Skip("no two ports free on 127.0.0.1 and 127.0.0.2")
	return netip.AddrPort{}
}

func TestJSON(t *testing.T) {
	srv := startServer(t)
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"-json", "-tcp", "-timeout", "2s", srv.String()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, k := range []string{"udp", "public", "behindNAT", "mapping", "filtering", "hairpinning", "portPreserved", "classic", "tcp", "probes"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %q missing", k)
		}
	}
	if _, ok := got["mappingLifetime"]; ok {
		t.Error("mappingLifetime present without -lifetime")
	}
	if got["udp"] != true || got["behindNAT"] != false || got["mapping"] != "endpoint-independent" ||
		got["filtering"] != "endpoint-independent" || got["classic"] != "open" {
		t.Errorf("report %s", out.String())
	}
	if pub, _ := got["public"].(string); !strings.HasPrefix(pub, "127.0.0.1:") {
		t.Errorf("public %q", pub)
	}
	if tcp, _ := got["tcp"].(map[string]any); tcp["mapping"] != "endpoint-independent" {
		t.Errorf("tcp %v", got["tcp"])
	}
	// The output is the library's Report, field for field: it decodes into
	// one with no key left over, and encodes back to the same bytes.
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	dec.DisallowUnknownFields()
	var rep nat.Report
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("natcheck -json is not a nat.Report: %v", err)
	}
	again, err := json.MarshalIndent(&rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(again), bytes.TrimSpace(out.Bytes())) {
		t.Errorf("re-encoded report differs:\n%s\nwant\n%s", again, out.String())
	}
	if rep.Mapping != nat.EndpointIndependent || rep.Server.RFC5780 != nat.Supported || len(rep.Probes) == 0 || rep.Probes[0].Test != nat.BindingTest {
		t.Errorf("decoded report %+v", rep)
	}
}

func TestTable(t *testing.T) {
	srv := startServer(t)
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{srv.String()}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"Mapping", "endpoint-independent", "Classic label", "open", "filtering-change-ip-port"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestExitCodes(t *testing.T) {
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("nat:\n  stun: [\"x:0\"]\n"), 0o644)
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"unknown flag", []string{"-bogus"}, 2},
		{"bad timeout", []string{"-timeout", "-1s", "127.0.0.1:1"}, 2},
		{"bad config", []string{"-config", cfg}, 2},
		{"no answer", []string{"-timeout", "300ms", silent.LocalAddr().String()}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(t.Context(), tt.args, &out, &errb); code != tt.want {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.want, errb.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"-h"}, &out, &errb); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	if !strings.HasPrefix(errb.String(), "natcheck reports") || !strings.Contains(errb.String(), "-json") {
		t.Errorf("-h printed %q", errb.String())
	}
}

// TestTableNoInbound: a report saying no inbound IPv4 is possible shows the
// row with its reason and points to the edge tunnel; one where it is
// possible does not.
func TestTableNoInbound(t *testing.T) {
	var out bytes.Buffer
	printTable(&out, &nat.Report{UDP: true, BehindNAT: nat.Yes, CarrierGradeNAT: nat.Yes, InboundIPv4: nat.No, InboundIPv4Reason: "carrier-grade NAT and no port mapping"}, false)
	if !regexp.MustCompile(`(?m)^Inbound IPv4 +no \(carrier-grade NAT and no port mapping\)$`).MatchString(out.String()) {
		t.Errorf("table lacks the inbound row:\n%s", out.String())
	}
	for _, want := range []string{"proxy.Edge", "tunnel: section"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	printTable(&out, &nat.Report{UDP: true, BehindNAT: nat.Yes, InboundIPv4: nat.Yes}, false)
	if strings.Contains(out.String(), "proxy.Edge") || !strings.Contains(out.String(), "Inbound IPv4") {
		t.Errorf("inbound possible:\n%s", out.String())
	}
}
