package config

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/miekg/dns"
)

const dnsExample = `
dns:
  listen: ["192.168.1.1:53", "203.0.113.1:53"]
  upstreams: ["9.9.9.9:53", "149.112.112.112", "tls://1.1.1.1#cloudflare-dns.com"]
  policy: fastest
  trustedProxies: ["127.0.0.1"]
  maxTCPConnsPerNetwork: 4
  forwardDoHCanary: true
  cache:
    stale: 48h
    staleAnswerTimeout: 1s
    holdNXDOMAIN: true
    persist: /tmp/x.json
  rateLimit:
    perSecond: 20
    exempt: ["192.168.1.0/24"]
  transfer:
    allow: ["198.51.100.53/32"]
    tsig: {"xfr.": "c2VjcmV0"}
    notify: ["198.51.100.53"]
    notifyKey: xfr
  views:
    - name: inside
      networks: ["192.168.1.0/24"]
      recursion: true
      splitTypes: ["A"]
      records: ["blog.example.com. 300 IN A 192.168.1.20"]
    - name: outside
      networks: ["0.0.0.0/0", "::/0"]
      zones: ["example.com"]
      records:
        - "blog.example.com. 300 IN A {public}"
        - "blog.example.com. 300 IN AAAA {public}"
        - "_info.example.com. 300 IN TXT \"at {public}\""
`

func TestDNSParseAndBuild(t *testing.T) {
	f, err := Parse([]byte(strings.Replace(dnsExample, "/tmp/x.json", filepath.Join(t.TempDir(), "cache.json"), 1)))
	if err != nil {
		t.Fatal(err)
	}
	srv, setPublic, err := f.DNS.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The upstreams and the NOTIFY target are documentation addresses:
	// nothing may leave this machine for them.
	srv.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, fmt.Errorf("test: no dialing %s", addr)
	}
	t.Cleanup(func() { srv.Close() })
	if len(srv.Upstreams) != 3 || srv.Upstreams[1].Addr.Port() != 53 || !srv.Upstreams[2].TLS ||
		srv.Upstreams[2].Addr.Port() != 853 || srv.Upstreams[2].ServerName != "cloudflare-dns.com" {
		t.Fatalf("upstreams %+v", srv.Upstreams)
	}
	if srv.MaxTCPConnsPerNetwork != 4 || !srv.ForwardDoHCanary {
		t.Fatalf("maxTCPConnsPerNetwork %d, forwardDoHCanary %v", srv.MaxTCPConnsPerNetwork, srv.ForwardDoHCanary)
	}
	if srv.Policy != dnssplit.PolicyFastest || srv.Cache.StaleFor.Hours() != 48 || !srv.Cache.HoldNXDOMAIN || srv.Cache.StaleAnswerTimeout != time.Second {
		t.Fatalf("policy/cache %v %+v", srv.Policy, srv.Cache)
	}
	if srv.TrustedProxies[0] != netip.MustParsePrefix("127.0.0.1/32") || srv.Transfer.Notify[0].Port() != 53 {
		t.Fatalf("trusted %v notify %v", srv.TrustedProxies, srv.Transfer.Notify)
	}
	if srv.Views[0].SplitTypes[0] != dns.TypeA {
		t.Fatalf("split types %v", srv.Views[0].SplitTypes)
	}
	ask := func(from string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("blog.example.com.", dns.TypeA)
		return srv.Resolve(context.Background(), m, dnssplit.Client{Source: netip.MustParseAddr(from)}, true)
	}
	if r := ask("8.8.8.8"); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before the public address is known: %v", r)
	}
	if err := setPublic(netip.MustParseAddr("203.0.113.9")); err != nil {
		t.Fatal(err)
	}
	if r := ask("8.8.8.8"); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "203.0.113.9" {
		t.Fatalf("after SetPublic: %v", r)
	}
	if err := setPublic(netip.MustParseAddr("198.51.100.2")); err != nil {
		t.Fatal(err)
	}
	if r := ask("8.8.8.8"); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "198.51.100.2" {
		t.Fatalf("after a changed public address: %v", r)
	}
	if r := ask("192.168.1.7"); r.Answer[0].(*dns.A).A.String() != "192.168.1.20" {
		t.Fatalf("inside: %v", r)
	}
}

func TestDNSZoneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "home.zone")
	if err := os.WriteFile(path, []byte("$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\nnas IN A 192.168.1.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Parse([]byte("dns:\n  views:\n    - name: all\n      zoneFiles: [{origin: home.arpa., path: " + path + "}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := f.DNS.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := srv.Views[0].Records.Lookup("nas.home.arpa.", dns.TypeA); len(a.Answer) != 1 {
		t.Fatalf("zone file not loaded: %+v", a)
	}
	f, _ = Parse([]byte("dns:\n  views:\n    - name: all\n      zoneFiles: [{origin: home.arpa., path: /nonexistent/zone}]\n"))
	if _, _, err := f.DNS.Build(nil); err == nil || !strings.Contains(err.Error(), "dns.views[0].zoneFiles[0].path") {
		t.Fatalf("missing zone file: %v", err)
	}
}

func TestDNSErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "dns:\n  listen: []\n  bogus: 1\n", `line 3: dns.bogus: unknown key`},
		{"bad listen", "dns:\n  listen: [\"192.168.1.1\"]\n", `line 2: dns.listen[0]: "192.168.1.1": want ip:port`},
		{"bad upstream", "dns:\n  upstreams: [\"dns.google\"]\n", `line 2: dns.upstreams[0]`},
		{"bad policy", "dns:\n  policy: random\n", `line 2: dns.policy: "random"`},
		{"bad prefix", "dns:\n  views:\n    - name: a\n      networks: [\"192.168.0.0/33\"]\n", `line 4: dns.views[0].networks[0]: "192.168.0.0/33": want a network`},
		{"bad record", "dns:\n  views:\n    - name: a\n      records:\n        - \"x. IN A 999.1.1.1\"\n", `line 5: dns.views[0].records[0]`},
		{"bad public record", "dns:\n  views:\n    - name: a\n      records: [\"x. IN MX {public}\"]\n", `line 4: dns.views[0].records[0]`},
		{"no name", "dns:\n  views:\n    - networks: [\"10.0.0.0/8\"]\n", `dns.views[0].name: every view needs a name`},
		{"duplicate name", "dns:\n  views:\n    - name: a\n      networks: [\"10.0.0.0/8\"]\n    - name: a\n", `line 5: dns.views[1].name: "a": duplicate`},
		{"default not last", "dns:\n  views:\n    - name: a\n    - name: b\n      networks: [\"10.0.0.0/8\"]\n", `dns.views[0].networks: only the last`},
		{"bad split type", "dns:\n  views:\n    - name: a\n      splitTypes: [\"AX\"]\n", `line 4: dns.views[0].splitTypes[0]: "AX": unknown record type`},
		{"bad duration", "dns:\n  cache:\n    stale: forever\n", `line 3: dns.cache.stale: "forever"`},
		{"bad rate", "dns:\n  rateLimit:\n    perSecond: 0\n", `dns.rateLimit.perSecond`},
		{"bad tsig", "dns:\n  transfer:\n    tsig: {k: \"!!\"}\n", `dns.transfer.tsig.k: secret is not base64`},
		{"bad notify key", "dns:\n  transfer:\n    notifyKey: nokey\n", `line 3: dns.transfer.notifyKey: "nokey"`},
		{"recursion without networks", "dns:\n  views:\n    - name: all\n      recursion: true\n", `line 4: dns.views[0].recursion: true: recursion needs networks`},
		{"bad cookie secret", "dns:\n  cookieSecret: c2hvcnQ=\n", `line 2: dns.cookieSecret: want at least 16 bytes`},
		{"bad stale timer", "dns:\n  cache:\n    staleAnswerTimeout: soon\n", `line 3: dns.cache.staleAnswerTimeout`},
		{"bad udp size", "dns:\n  udpSize: 100\n", `line 2: dns.udpSize: 100`},
		{"bad per-network TCP bound", "dns:\n  maxTCPConnsPerNetwork: -3\n", `line 2: dns.maxTCPConnsPerNetwork: -3: want a positive number, 0 for the default or -1 for no limit`},
		{"canary not a bool", "dns:\n  forwardDoHCanary: sometimes\n", `line 2: dns.forwardDoHCanary`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDNSDefaultRateLimit(t *testing.T) {
	const views = "  views:\n    - name: inside\n      networks: [\"192.168.1.0/24\"]\n      recursion: true\n    - name: outside\n      networks: [\"0.0.0.0/0\"]\n"
	build := func(extra string) *dnssplit.Server {
		t.Helper()
		return buildDNS(t, "dns:\n"+extra+views)
	}
	// No key: nil, dnssplit's zero-value limit (on, recursive views exempt).
	if rl := build("").RateLimit; rl != nil {
		t.Fatalf("no rateLimit key: %+v, want nil (the library's default limit)", rl)
	}
	if rl := build("  rateLimit: {off: true}\n").RateLimit; rl == nil || !rl.Disabled {
		t.Fatalf("rateLimit off: %+v", rl)
	}
	if rl := build("  rateLimit: {perSecond: 5}\n").RateLimit; rl == nil || rl.PerSecond != 5 || len(rl.Exempt) != 0 {
		t.Fatalf("explicit rateLimit: %+v", rl)
	}
}
