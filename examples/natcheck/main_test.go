package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/nat"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

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
