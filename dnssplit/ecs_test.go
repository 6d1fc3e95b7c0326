package dnssplit

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/interop"
)

func TestSubnetScope(t *testing.T) {
	views := []*View{
		{Name: "lan", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.1.2.3/32")}},
		{Name: "v6", Networks: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}},
		{Name: "mapped", Networks: []netip.Prefix{netip.MustParsePrefix("::ffff:172.16.0.0/108")}},
		{Name: "all", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}},
	}
	for _, tt := range []struct {
		addr string
		want uint8
	}{
		{"192.168.1.77", 24},  // inside the /24: the whole /24 is one view
		{"192.168.0.1", 24},   // next to it: 192.168.0.0/24 holds no boundary
		{"10.1.2.3", 32},      // a host route
		{"10.1.2.2", 32},      // 10.1.2.2/31 holds the host route
		{"10.1.2.1", 31},      // 10.1.2.0/31 does not
		{"172.16.5.5", 12},    // an IPv4-mapped network counts as IPv4
		{"8.8.8.8", 7},        // 8.0.0.0/7 is the first prefix without 10.1.2.3
		{"2001:db8:1::9", 48}, // IPv6
		{"2001:db9::1", 32},
		{"::ffff:192.168.1.1", 24},
	} {
		if got := subnetScope(views, netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("subnetScope(%s) = %d, want %d", tt.addr, got, tt.want)
		}
	}
}

// TestECSScopeThroughUnbound: unbound with its subnet cache in front of a
// two-view dnssplit (unbound sends the client's /32 as ECS, and is a trusted
// proxy) never hands the inside answer to an outside client, in either
// order. Before, the scope was 0 and unbound's cache gave the first
// client's view to everyone.
func TestECSScopeThroughUnbound(t *testing.T) {
	p := interop.Need(t, "unbound")
	s := splitServer(t)
	addr := start(t, s)
	_, ourPort, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`server:
  interface: 127.0.0.1
  port: %d
  outgoing-interface: 127.0.0.3
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "%s"
  pidfile: "%s/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "subnetcache iterator"
  send-client-subnet: 127.0.0.1
  max-client-subnet-ipv4: 32
  local-zone: "ready.test." static
  local-data: "ready.test. 5 IN A 198.51.100.1"
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@%s
remote-control:
  control-enable: no
`, port, dir, dir, ourPort)
	cf := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startPeer(t, p["unbound"], "-d", "-c", cf)
	ub := fmt.Sprintf("127.0.0.1:%d", port)
	waitAnswer(t, ub, "ready.test.", "198.51.100.1", 10*time.Second)

	ask := func(from, name string) string {
		t.Helper()
		c := &dns.Client{Net: "udp", Timeout: 3 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.RecursionDesired = true
		r, _, err := c.Exchange(m, ub)
		if err != nil {
			t.Fatalf("from %s, %s: %v", from, name, err)
		}
		return firstA(r)
	}
	const inside, outside = "192.168.1.20", "203.0.113.1"
	// Inside first, then outside, then the other order; each twice, so the
	// second asks are answered from unbound's subnet cache.
	for i, order := range [][2]string{{"127.0.0.2", "127.0.0.1"}, {"127.0.0.1", "127.0.0.2"}} {
		name := "blog.example.com."
		if i == 1 {
			name = strings.ToUpper(name[:1]) + name[1:] // same cache entries, other spelling
		}
		for round := range 2 {
			for _, from := range order {
				want := outside
				if from == "127.0.0.2" {
					want = inside
				}
				if got := ask(from, name); got != want {
					t.Fatalf("order %v, round %d: client %s got %q, want %q (its view's answer)", order, round, from, got, want)
				}
			}
		}
	}
}
