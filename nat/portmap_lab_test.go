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

// TestLabPortMapRenewal: with a 4 s lifetime each protocol's mapping is
// renewed before it ends and stays reachable past the first lifetime.
func TestLabPortMapRenewal(t *testing.T) {
	for _, p := range []PortMapProtocol{PortMapPCP, PortMapNATPMP, PortMapUPnP} {
		t.Run(p.String(), func(t *testing.T) {
			lab, d := upnpLab(t, natlab.MiniUPnPdConfig{})
			m := labMapper(t, lab, natlab.LAN1, p)
			defer m.Close()
			internal := echoServer(t, lab, TransportUDP)
			const life = 4 * time.Second
			first, err := m.Map(t.Context(), TransportUDP, internal, 0, life)
			if err != nil {
				t.Fatalf("map: %v\n%s", err, d.Log())
			}
			if first.Lifetime != life {
				t.Errorf("granted %v, want %v", first.Lifetime, life)
			}
			// Wait for two renewals (each moves Expires), then past the
			// first expiry the mapping must still forward.
			deadline := time.Now().Add(60 * time.Second)
			renewals, last := 0, first.Expires
			for renewals < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("%d renewals in 60 s", renewals)
				}
				time.Sleep(100 * time.Millisecond)
				ms := m.Mappings()
				if len(ms) != 1 {
					t.Fatalf("mappings %v", ms)
				}
				if ms[0].Expires.After(last) {
					renewals++
					last = ms[0].Expires
				}
			}
			if !time.Now().After(first.Expires) {
				t.Fatalf("two renewals before the first expiry %v: the test proves nothing", first.Expires)
			}
			if !reach(t, lab, TransportUDP, first.External, 10*time.Second) {
				t.Errorf("not reachable after the first lifetime ended\nrules:\n%s", must(d.Rules()))
			}
			if !upnpcLists(t, lab, d, TransportUDP, first.External.Port(), internal) {
				t.Error("upnpc -L does not list the renewed mapping")
			}
		})
	}
}

// TestLabPortMapDenied: a port that miniupnpd's deny rule covers. UPnP
// (which asks for that exact port) gets a refusal naming the protocol and
// miniupnpd's error code. PCP and NAT-PMP only suggest a port, and
// miniupnpd 2.3.1 then grants another one outside the rule (the captured
// miniupnpd-*-denied-response.bin): the Mapping must say which.
func TestLabPortMapDenied(t *testing.T) {
	lab, d := upnpLab(t, natlab.MiniUPnPdConfig{Rules: []string{"deny 4500-4510 0.0.0.0/0 0-65535"}})
	for _, p := range []PortMapProtocol{PortMapPCP, PortMapNATPMP, PortMapUPnP} {
		t.Run(p.String(), func(t *testing.T) {
			m := labMapper(t, lab, natlab.LAN1, p)
			defer m.Close()
			internal := echoServer(t, lab, TransportTCP)
			got, err := m.Map(t.Context(), TransportTCP, internal, 4505, time.Minute)
			if p != PortMapUPnP {
				if err != nil {
					t.Fatal(err)
				}
				if port := got.External.Port(); port >= 4500 && port <= 4510 {
					t.Fatalf("granted denied port %d", port)
				}
				if !reach(t, lab, TransportTCP, got.External, 10*time.Second) {
					t.Errorf("granted %v not reachable", got.External)
				}
				return
			}
			t.Logf("error: %v", err)
			var pe *PortMapError
			if !errors.As(err, &pe) || pe.Protocol != p || pe.Code == 0 {
				t.Fatalf("error %v, want a %v refusal with a code\n%s", err, p, d.Log())
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%v refused: ", p)) || !strings.Contains(err.Error(), fmt.Sprintf("(result code %d)", pe.Code)) {
				t.Errorf("error %q does not name the protocol and code", err)
			}
			if len(m.Mappings()) != 0 {
				t.Error("refused mapping kept")
			}
		})
	}
}

// TestLabPortMapRestart: miniupnpd restarted without a lease file forgets
// every mapping; the mapper's next renewal creates it again in the new
// daemon, and the internet reaches it again.
func TestLabPortMapRestart(t *testing.T) {
	for _, p := range []PortMapProtocol{PortMapPCP, PortMapNATPMP, PortMapUPnP} {
		t.Run(p.String(), func(t *testing.T) {
			lab, d := upnpLab(t, natlab.MiniUPnPdConfig{})
			m := labMapper(t, lab, natlab.LAN1, p)
			defer m.Close()
			internal := echoServer(t, lab, TransportTCP)
			got, err := m.Map(t.Context(), TransportTCP, internal, 0, 6*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Restart(); err != nil {
				t.Fatal(err)
			}
			added := map[PortMapProtocol]string{PortMapPCP: "PCP MAP: added mapping", PortMapNATPMP: "NAT-PMP", PortMapUPnP: "AddPortMapping"}[p]
			// The new daemon may give another external port (the old
			// one's rule can linger while it starts); the mapper reports
			// the change, so follow what it says it holds now.
			current := func() netip.AddrPort {
				if ms := m.Mappings(); len(ms) == 1 {
					return ms[0].External
				}
				return netip.AddrPort{}
			}
			deadline := time.Now().Add(60 * time.Second)
			for !upnpcLists(t, lab, d, TransportTCP, current().Port(), internal) {
				if time.Now().After(deadline) {
					t.Fatalf("not re-created within 60 s of the restart (mapper holds %v)\n%s", current(), d.Log())
				}
				time.Sleep(200 * time.Millisecond)
			}
			got.External = current()
			if !strings.Contains(d.Log(), added) {
				t.Errorf("the new daemon's log has no %q:\n%s", added, d.Log())
			}
			if !reach(t, lab, TransportTCP, got.External, 10*time.Second) {
				t.Errorf("not reachable after re-creation\nrules:\n%s", must(d.Rules()))
			}
		})
	}
}

// TestLabPortMapPublicHost: on a public LAN (NoNAT) nothing is asked.
func TestLabPortMapPublicHost(t *testing.T) {
	lab := natlab.New(t, natlab.Config{Kind: natlab.NoNAT})
	m := labMapper(t, lab, natlab.LAN1, PortMapPCP, PortMapNATPMP)
	defer m.Close()
	if _, err := m.Map(t.Context(), TransportTCP, 443, 443, 0); !errors.Is(err, ErrPublicAddress) {
		t.Fatalf("error %v, want ErrPublicAddress", err)
	}
}

// TestLabCheckPortMapping: with a PCP mapping, the STUN server's answer
// from its other address (which the LAN host never sent to) reaches the
// mapped socket through the mapping's public port. A socket without a
// mapping is not reached the same way. (A check after deleting the mapping
// would be reached still: the router's conntrack entry of the first check
// outlives the deleted forwarding rule.)
func TestLabCheckPortMapping(t *testing.T) {
	lab, _ := upnpLab(t, natlab.MiniUPnPdConfig{})
	a1, a2 := lab.ServerAddrs()
	c := labClient(lab, natlab.LAN1, netip.AddrPortFrom(a1, labPort))
	c.Timeout = 3 * time.Second
	listen := func() (net.PacketConn, uint16) {
		pc, err := lab.ListenPacket(natlab.LAN1, "udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc, uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	}
	public := lab.PublicAddr()

	unmapped, port := listen()
	res, err := c.CheckPortMapping(t.Context(), unmapped, netip.AddrPortFrom(public, port))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reachable {
		t.Fatalf("a port nobody mapped is reachable: %+v", res)
	}

	pc, port := listen()
	m := labMapper(t, lab, natlab.LAN1, PortMapPCP)
	defer m.Close()
	got, err := m.Map(t.Context(), TransportUDP, port, 0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	res, err = c.CheckPortMapping(t.Context(), pc, got.External)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Reachable {
		t.Fatalf("mapped port not reachable: %+v", res)
	}
	if want := netip.AddrPortFrom(a2, labAltPort); res.From != want {
		t.Errorf("answer from %v, want the server's other address %v", res.From, want)
	}
	if res.SentTo != got.External {
		t.Errorf("sent to %v, want the mapping's %v", res.SentTo, got.External)
	}
	if len(res.Evidence) != 2 {
		t.Errorf("evidence %+v, want the binding and the check", res.Evidence)
	}
}
