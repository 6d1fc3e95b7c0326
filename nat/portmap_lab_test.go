package nat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
)

// upnpLab builds a port-restricted lab with our RFC 5780 STUN server on
// Server (miniupnpd's external-address test) and miniupnpd on Router.
func upnpLab(t *testing.T, cfg natlab.MiniUPnPdConfig) (*natlab.Lab, *natlab.MiniUPnPd) {
	t.Helper()
	interop.Need(t, "miniupnpd", "upnpc")
	lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted})
	cfg.STUN = labServer(t, lab)
	d := lab.StartMiniUPnPd(cfg)
	return lab, d
}

// labMapper is a PortMapper whose sockets live on host, finding the
// gateway in host's routing table.
func labMapper(t *testing.T, lab *natlab.Lab, host natlab.Host, protos ...PortMapProtocol) *PortMapper {
	return &PortMapper{
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Protocols: protos,
		Timeout:   5 * time.Second,
		gatewayFunc: func() (netip.Addr, error) {
			var gw netip.Addr
			err := lab.Do(host, func() error {
				var err error
				gw, err = defaultGateway()
				return err
			})
			return gw, err
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.Dial(ctx, host, network, addr)
		},
		ListenPacket: func(_ context.Context, network, addr string) (net.PacketConn, error) {
			return lab.ListenPacket(host, network, addr)
		},
	}
}

// echoServer listens on LAN1 (a fresh port) for t and echoes what arrives,
// UDP datagrams or the first line of each TCP connection. It returns the
// local port.
func echoServer(t *testing.T, lab *natlab.Lab, tr Transport) uint16 {
	t.Helper()
	if tr == TransportUDP {
		pc, err := lab.ListenPacket(natlab.LAN1, "udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		t.Cleanup(func() { pc.Close(); <-done })
		go func() {
			defer close(done)
			buf := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
			}
		}()
		return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	}
	ln, err := lab.Listen(natlab.LAN1, "tcp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				_, _ = c.Write(append([]byte("echo "), buf[:n]...))
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// reach reports whether Peer, on the internet side, gets an echo from ext
// within wait (UDP: one datagram every 200 ms).
func reach(t *testing.T, lab *natlab.Lab, tr Transport, ext netip.AddrPort, wait time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	msg := fmt.Sprintf("hello %v %v", tr, ext)
	if tr == TransportUDP {
		pc, err := lab.ListenPacket(natlab.Peer, "udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		buf := make([]byte, 1500)
		for ctx.Err() == nil {
			if _, err := pc.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(ext)); err != nil {
				t.Fatal(err)
			}
			_ = pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				continue
			}
			if from.(*net.UDPAddr).AddrPort() == ext && string(buf[:n]) == "echo "+msg {
				return true
			}
		}
		return false
	}
	for ctx.Err() == nil {
		c, err := lab.Dial(ctx, natlab.Peer, "tcp4", ext.String())
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		_ = c.SetDeadline(time.Now().Add(wait))
		_, _ = c.Write([]byte(msg))
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) == "echo "+msg {
			return true
		}
	}
	return false
}

// upnpcLists reports whether `upnpc -L` on LAN2 (an independent client on
// the same LAN) lists a mapping of ext port to LAN1's port internal.
func upnpcLists(t *testing.T, lab *natlab.Lab, d *natlab.MiniUPnPd, tr Transport, ext, internal uint16) bool {
	t.Helper()
	out, err := lab.Command(natlab.LAN2, "upnpc", "-u", d.Location(), "-L").CombinedOutput()
	if err != nil {
		t.Fatalf("upnpc -l: %v\n%s", err, out)
	}
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*\d+\s+%s\s+%d->%s:%d\s`,
		strings.ToUpper(tr.String()), ext, regexp.QuoteMeta(lab.Addr(natlab.LAN1).String()), internal))
	return re.Match(out)
}

func TestLabPortMapProbe(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  natlab.MiniUPnPdConfig
		want string
	}{
		{"all", natlab.MiniUPnPdConfig{}, "PCP yes / NAT-PMP yes / UPnP IGD v2 at 192.168.1.1 (external 203.0.113.2 by PCP"},
		{"igdv1", natlab.MiniUPnPdConfig{IGDv1: true, NoNATPMP: true}, "PCP no / NAT-PMP no / UPnP IGD v1 at 192.168.1.1 (external 203.0.113.2 by UPnP IGD)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lab, _ := upnpLab(t, tc.cfg)
			m := labMapper(t, lab, natlab.LAN1)
			defer m.Close()
			r, err := m.Probe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got := r.String(); !strings.HasPrefix(got, strings.TrimSuffix(tc.want, "PCP")) {
				t.Errorf("report %q (errors %v), want %q", got, r.Errors, tc.want)
			}
			if r.Local != lab.Addr(natlab.LAN1) || r.Gateway != netip.MustParseAddr("192.168.1.1") {
				t.Errorf("local %v gateway %v", r.Local, r.Gateway)
			}
		})
	}
}

func TestLabPortMap(t *testing.T) {
	for _, p := range []PortMapProtocol{PortMapPCP, PortMapNATPMP, PortMapUPnP} {
		t.Run(p.String(), func(t *testing.T) {
			lab, d := upnpLab(t, natlab.MiniUPnPdConfig{})
			m := labMapper(t, lab, natlab.LAN1, p)
			closed := false
			defer func() {
				if !closed {
					m.Close()
				}
			}()
			type mapped struct {
				tr       Transport
				internal uint16
				got      Mapping
			}
			var all []mapped
			for _, tr := range []Transport{TransportUDP, TransportTCP} {
				internal := echoServer(t, lab, tr)
				got, err := m.Map(t.Context(), tr, internal, 0, time.Hour)
				if err != nil {
					t.Fatalf("map %v %d: %v\nminiupnpd:\n%s", tr, internal, err, d.Log())
				}
				t.Logf("%v: %+v", tr, got)
				if got.Protocol != p || got.Transport != tr || got.Internal != netip.AddrPortFrom(lab.Addr(natlab.LAN1), internal) {
					t.Errorf("mapping %+v", got)
				}
				if got.External.Addr() != lab.PublicAddr() || got.External.Port() == 0 {
					t.Errorf("external %v, want %v and a port", got.External, lab.PublicAddr())
				}
				if got.Lifetime <= 0 || got.Lifetime > time.Hour {
					t.Errorf("lifetime %v", got.Lifetime)
				}
				if !reach(t, lab, tr, got.External, 10*time.Second) {
					t.Fatalf("Peer cannot reach %v %v\nrules:\n%s", tr, got.External, must(d.Rules()))
				}
				if !upnpcLists(t, lab, d, tr, got.External.Port(), internal) {
					t.Errorf("upnpc -l does not list %v %v", tr, got.External)
				}
				all = append(all, mapped{tr, internal, got})
			}
			if got := m.Mappings(); len(got) != 2 {
				t.Errorf("Mappings() = %v", got)
			}
			closed = true
			if err := m.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			rules := must(d.Rules())
			for _, mp := range all {
				if upnpcLists(t, lab, d, mp.tr, mp.got.External.Port(), mp.internal) {
					t.Errorf("after Close, upnpc -l still lists %v %v", mp.tr, mp.got.External)
				}
				if strings.Contains(rules, fmt.Sprintf("dport %d ", mp.got.External.Port())) {
					t.Errorf("after Close, miniupnpd still has a rule for port %d:\n%s", mp.got.External.Port(), rules)
				}
				// The echo server still runs: only the mapping is gone.
				if reach(t, lab, mp.tr, mp.got.External, time.Second) {
					t.Errorf("after Close, Peer still reaches %v %v", mp.tr, mp.got.External)
				}
			}
			if _, err := m.Map(t.Context(), TransportUDP, all[0].internal, 0, 0); !errors.Is(err, ErrPortMapperClosed) {
				t.Errorf("Map after Close: %v, want ErrPortMapperClosed", err)
			}
		})
	}
}

func must(s string, err error) string {
	if err != nil {
		return err.Error()
	}
	return s
}
