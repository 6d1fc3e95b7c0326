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

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/miekg/dns"
)

// Real BIND and Knot secondaries of a TSIG-protected dnssplit primary: they
// transfer the zone, and follow changes by NOTIFY (signed with the key) and
// by their own refresh timer (a signed SOA query whose signed reply they
// verify before transferring).

// secondaryPorts returns n distinct loopback ports free for UDP and TCP.
func secondaryPorts(t *testing.T, n int) []int {
	t.Helper()
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		p := freePort(t)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// namedSecondary runs BIND as a secondary of example.com on port, from
// primary, with key; fast makes it refresh every second or two.
func namedSecondary(t *testing.T, path string, port int, primary, keyName, secret string, fast bool) {
	t.Helper()
	dir := t.TempDir()
	host, pport, _ := net.SplitHostPort(primary)
	timers := ""
	if fast {
		timers = "min-refresh-time 1; max-refresh-time 2; min-retry-time 1; max-retry-time 2;"
	}
	conf := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	managed-keys-directory "%[1]s";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	notify no;
	dnssec-validation no;
	check-names secondary ignore;
	%[7]s
};
controls { };
key "%[5]s" { algorithm hmac-sha256; secret "%[6]s"; };
zone "example.com" {
	type secondary;
	primaries { %[3]s port %[4]s key "%[5]s"; };
	file "%[1]s/example.com.db";
};
`, dir, port, host, pport, keyName, secret, timers)
	cf := filepath.Join(dir, "named.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startPeer(t, path, "-g", "-4", "-n", "1", "-c", cf)
}

// knotSecondary runs Knot as a secondary, as namedSecondary.
func knotSecondary(t *testing.T, path string, port int, primary, keyName, secret string, fast bool) {
	t.Helper()
	dir := t.TempDir()
	host, pport, _ := net.SplitHostPort(primary)
	timers := ""
	if fast {
		timers = "    refresh-min-interval: 2\n    refresh-max-interval: 3\n    retry-min-interval: 2\n    retry-max-interval: 3\n"
	}
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "%[1]s"
key:
  - id: %[5]s
    algorithm: hmac-sha256
    secret: %[6]s
remote:
  - id: primary
    address: %[3]s@%[4]s
    key: %[5]s
acl:
  - id: from_primary
    address: %[3]s
    action: notify
    key: %[5]s
template:
  - id: default
    storage: "%[1]s"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
%[7]szone:
  - domain: example.com
    master: primary
    acl: from_primary
`, dir, port, host, pport, keyName, secret, timers)
	cf := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startPeer(t, path, "-c", cf)
}

func setBlog(t *testing.T, r *Records, addr string) {
	t.Helper()
	rr, err := ParseRecord("blog.example.com. 60 IN A " + addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set("blog.example.com.", dns.TypeA, rr); err != nil {
		t.Fatal(err)
	}
}

func TestSecondariesTSIG(t *testing.T) {
	p := interop.Need(t, "named", "knotd")
	for _, mode := range []string{"notify", "refresh"} {
		t.Run(mode, func(t *testing.T) {
			ports := secondaryPorts(t, 2)
			s := transferServer(t)
			if mode == "notify" {
				for _, port := range ports {
					s.Transfer.Notify = append(s.Transfer.Notify, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
				}
				s.Transfer.NotifyKey = "xfr"
			}
			primary := start(t, s)
			fast := mode == "refresh"
			namedSecondary(t, p["named"], ports[0], primary, "xfr.", testSecret, fast)
			knotSecondary(t, p["knotd"], ports[1], primary, "xfr.", testSecret, fast)
			secs := map[string]string{
				"bind": fmt.Sprintf("127.0.0.1:%d", ports[0]),
				"knot": fmt.Sprintf("127.0.0.1:%d", ports[1]),
			}
			for name, addr := range secs {
				took := waitAnswer(t, addr, "blog.example.com.", "192.168.1.20", 20*time.Second)
				t.Logf("%s transferred the zone %v after start", name, took)
			}
			for i, want := range []string{"203.0.113.55", "203.0.113.56"} {
				setBlog(t, s.Views[1].Records, want)
				for name, addr := range secs {
					took := waitAnswer(t, addr, "blog.example.com.", want, 20*time.Second)
					t.Logf("%s followed change %d by %s in %v", name, i+1, mode, took)
				}
			}
			st := s.Stats()
			if st.TransfersServed < 6 {
				t.Fatalf("transfers served %d, want at least 6 (2 secondaries × 3 versions): %+v", st.TransfersServed, st)
			}
			if mode == "notify" && st.NotifiesSent < 4 {
				t.Fatalf("notifies sent %d, want at least 4", st.NotifiesSent)
			}
		})
	}
}

// TestSecondariesByKey gives each view its own TSIG key and secondary, as
// BIND's match-clients { key k; }: both secondaries transfer from the same
// address, and each gets its own view's zone and NOTIFY.
func TestSecondariesByKey(t *testing.T) {
	p := interop.Need(t, "knotd")
	const insideSecret = "aW5zaWRlLWluc2lkZS1pbnNpZGUtaW5zaWRlLWluc2lkZQ=="
	ports := secondaryPorts(t, 2)
	inside, outside := new(Records), new(Records)
	for _, r := range []*Records{inside, outside} {
		if err := r.LoadZone(strings.NewReader(testZone), "example.com.", "test"); err != nil {
			t.Fatal(err)
		}
	}
	setBlog(t, outside, "203.0.113.1")
	at := func(port int) []netip.AddrPort {
		return []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}
	}
	s := &Server{
		Views: []*View{
			{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}, Records: inside,
				TSIGKeys: []string{"inside."}, Notify: at(ports[0])},
			{Name: "outside", Records: outside, TSIGKeys: []string{"outside."}, Notify: at(ports[1])},
		},
		Transfer: &Transfer{
			Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
			TSIG:  map[string]string{"inside.": insideSecret, "outside.": testSecret},
		},
	}
	primary := start(t, s)
	knotSecondary(t, p["knotd"], ports[0], primary, "inside.", insideSecret, false)
	knotSecondary(t, p["knotd"], ports[1], primary, "outside.", testSecret, false)
	in, out := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	waitAnswer(t, in, "blog.example.com.", "192.168.1.20", 20*time.Second)
	waitAnswer(t, out, "blog.example.com.", "203.0.113.1", 20*time.Second)
	setBlog(t, inside, "192.168.1.21")
	setBlog(t, outside, "203.0.113.2")
	waitAnswer(t, in, "blog.example.com.", "192.168.1.21", 20*time.Second)
	waitAnswer(t, out, "blog.example.com.", "203.0.113.2", 20*time.Second)
}
