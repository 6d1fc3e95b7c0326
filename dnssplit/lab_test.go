package dnssplit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
)

// TestLabSplitHorizon runs the server on a LAN host behind a port-restricted
// NAT without hairpinning, with DNS forwarded from the router's public
// address, and Unbound on an internet host as upstream. A LAN client and an
// internet client ask for the same name and get different answers; the
// server listens on the unspecified address and replies from the address
// each query arrived on (a second address on the LAN host selects a view of
// its own).
func TestLabSplitHorizon(t *testing.T) {
	p := interop.Need(t, "dig", "unbound")
	lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted, Forwards: []natlab.Forward{
		{Proto: "udp", Port: 53, To: natlab.LAN1},
		{Proto: "tcp", Port: 53, To: natlab.LAN1},
	}})
	lan := netip.PrefixFrom(lab.Addr(natlab.LAN2), 24).Masked()
	public := lab.PublicAddr()
	second := netip.MustParseAddr("192.168.1.53")
	if out, err := lab.Command(natlab.LAN1, "ip", "addr", "add", second.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("adding a second address: %v %s", err, out)
	}

	// Unbound on the internet host Server.
	dir := t.TempDir()
	ubAddr := lab.Addr(natlab.Server)
	conf := fmt.Sprintf("server:\n  interface: %s\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: %q\n  pidfile: %q\n  use-syslog: no\n  logfile: \"\"\n  do-ip6: no\n  access-control: 0.0.0.0/0 allow\n  module-config: \"iterator\"\n  local-zone: \"example.net.\" static\n  local-data: \"www.example.net. 5 IN A 198.51.100.77\"\nremote-control:\n  control-enable: no\n",
		ubAddr, dir, filepath.Join(dir, "pid"))
	cf := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ub, err := lab.Start(natlab.Server, p["unbound"], "-d", "-c", cf)
	if err != nil {
		t.Fatal(err)
	}

	inside, second53, outside := new(Records), new(Records), new(Records)
	inside.AddString("blog.example.com. 300 IN A 192.168.1.20")
	second53.AddString("blog.example.com. 300 IN A 192.168.1.21")
	outside.AddString("blog.example.com. 300 IN A " + public.String())
	s := &Server{
		Views: []*View{
			{Name: "second", Networks: []netip.Prefix{lan}, LocalAddrs: []netip.Prefix{netip.PrefixFrom(second, 32)}, Recursion: true, Records: second53},
			{Name: "inside", Networks: []netip.Prefix{lan}, Recursion: true, Records: inside},
			{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: outside},
		},
		Upstreams:       []Upstream{{Addr: netip.AddrPortFrom(ubAddr, 53)}},
		UpstreamTimeout: 500 * time.Millisecond,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.Dial(ctx, natlab.LAN1, network, addr)
		},
	}
	pc, err := lab.ListenPacket(natlab.LAN1, "udp4", "0.0.0.0:53")
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.Listen(natlab.LAN1, "tcp4", "0.0.0.0:53")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- s.ServePacket(pc) }()
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		for range 2 {
			if err := <-done; !errors.Is(err, ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}
	})

	dig := func(host natlab.Host, server netip.Addr, args ...string) string {
		t.Helper()
		args = append([]string{"@" + server.String(), "+tries=3", "+time=3"}, args...)
		out, err := lab.CommandContext(t.Context(), host, p["dig"], args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v from %v: %v\n%s", args, host, err, out)
		}
		s := strings.TrimSpace(string(out))
		if slices.Contains(args, "+short") {
			// A retry after a lost packet (a loaded CI machine) prints
			// the timeout before the answer: keep the answer.
			s = s[strings.LastIndex(s, "\n")+1:]
		}
		return s
	}
	lan1 := lab.Addr(natlab.LAN1)
	// Wait for unbound through the NAT (its readiness signal).
	deadline := time.Now().Add(10 * time.Second)
	for dig(natlab.LAN2, lan1, "+short", "www.example.net") != "198.51.100.77" {
		if time.Now().After(deadline) {
			t.Fatalf("unbound never answered through the server:\n%s\ndirect:\n%s\nstats %+v", dig(natlab.LAN2, lan1, "www.example.net"),
				dig(natlab.LAN1, ubAddr, "www.example.net"), s.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tt := range []struct {
		name   string
		from   natlab.Host
		server netip.Addr
		args   []string
		want   string
	}{
		{"LAN client", natlab.LAN2, lan1, []string{"+short", "blog.example.com"}, "192.168.1.20"},
		{"LAN client over TCP", natlab.LAN2, lan1, []string{"+tcp", "+short", "blog.example.com"}, "192.168.1.20"},
		{"LAN client to second address", natlab.LAN2, second, []string{"+short", "blog.example.com"}, "192.168.1.21"},
		{"internet client via port forward", natlab.Peer, public, []string{"+short", "blog.example.com"}, public.String()},
		{"internet client over TCP", natlab.Peer, public, []string{"+tcp", "+short", "blog.example.com"}, public.String()},
		{"internet client spoofing ECS", natlab.Peer, public, []string{"+short", "+subnet=192.168.1.0/24", "blog.example.com"}, public.String()},
		{"LAN recursion", natlab.LAN2, lan1, []string{"+short", "www.example.net"}, "198.51.100.77"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := dig(tt.from, tt.server, tt.args...); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	if got := dig(natlab.Peer, public, "www.example.net"); !strings.Contains(got, "status: REFUSED") {
		t.Fatalf("internet client, name outside our zones:\n%s", got)
	}
	// Unbound dies: the cached name is served stale once its TTL is over.
	ub.Process.Kill()
	s.cache.mu.Lock()
	s.cache.setClock(func() time.Time { return time.Now().Add(time.Minute) })
	s.cache.mu.Unlock()
	if got := dig(natlab.LAN2, lan1, "+short", "www.example.net"); got != "198.51.100.77" {
		t.Fatalf("stale after the upstream died: %q", got)
	}
	st := s.Stats()
	t.Logf("stats: queries %v, stale %d, upstream failures %d", st.Queries, st.StaleServed, st.UpstreamFailures)
	if st.StaleServed == 0 || st.Queries["outside"]["REFUSED"] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestLabDualStack serves one dual-stack socket ([::]:53) on a LAN host with
// IPv6 everywhere: IPv4 and IPv6 clients inside and outside get their view,
// and replies leave from the address each query arrived on (IPv4-mapped
// control messages on the IPv6 socket).
func TestLabDualStack(t *testing.T) {
	p := interop.Need(t, "dig")
	lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted, IPv6: true, Forwards: []natlab.Forward{
		{Proto: "udp", Port: 53, To: natlab.LAN1},
		{Proto: "tcp", Port: 53, To: natlab.LAN1},
	}})
	lan4 := netip.PrefixFrom(lab.Addr(natlab.LAN2), 24).Masked()
	lan6 := netip.PrefixFrom(lab.Addr6(natlab.LAN2), 64).Masked()
	second := netip.MustParseAddr("192.168.1.53")
	if out, err := lab.Command(natlab.LAN1, "ip", "addr", "add", second.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("adding a second address: %v %s", err, out)
	}
	inside, outside := new(Records), new(Records)
	inside.AddString("blog.example.com. 300 IN A 192.168.1.20", "blog.example.com. 300 IN AAAA "+lab.Addr6(natlab.LAN1).String())
	outside.AddString("blog.example.com. 300 IN A "+lab.PublicAddr().String(), "blog.example.com. 300 IN AAAA "+lab.Addr6(natlab.LAN1).String())
	s := &Server{Views: []*View{
		{Name: "inside", Networks: []netip.Prefix{lan4, lan6}, Records: inside},
		{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, Records: outside},
	}}
	pc, err := lab.ListenPacket(natlab.LAN1, "udp", "[::]:53")
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.Listen(natlab.LAN1, "tcp", "[::]:53")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- s.ServePacket(pc) }()
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		for range 2 {
			if err := <-done; !errors.Is(err, ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}
	})
	for _, tt := range []struct {
		name   string
		from   natlab.Host
		server netip.Addr
		extra  string
		want   string
	}{
		{"LAN over IPv4", natlab.LAN2, lab.Addr(natlab.LAN1), "+notcp", "192.168.1.20"},
		{"LAN over IPv4 to a second address", natlab.LAN2, second, "+notcp", "192.168.1.20"},
		{"LAN over IPv6", natlab.LAN2, lab.Addr6(natlab.LAN1), "+notcp", "192.168.1.20"},
		{"LAN over IPv6 TCP", natlab.LAN2, lab.Addr6(natlab.LAN1), "+tcp", "192.168.1.20"},
		{"internet over IPv4 port forward", natlab.Peer, lab.PublicAddr(), "+notcp", lab.PublicAddr().String()},
		{"internet over IPv6", natlab.Peer, lab.Addr6(natlab.LAN1), "+notcp", lab.PublicAddr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := lab.CommandContext(t.Context(), tt.from, p["dig"], "@"+tt.server.String(), "+tries=3", "+time=3", tt.extra, "+short", "blog.example.com", "A").CombinedOutput()
			got := strings.TrimSpace(string(out))
			got = got[strings.LastIndex(got, "\n")+1:]
			if err != nil || got != tt.want {
				t.Fatalf("got %q (%v), want %q; output:\n%s", got, err, tt.want, out)
			}
		})
	}
}
