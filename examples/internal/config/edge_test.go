package config

import (
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/proxy"
)

// TestEdgeTunnelErrors: each mistake in the edge and tunnel sections is
// named by key path, line and value.
func TestEdgeTunnelErrors(t *testing.T) {
	k, err := proxy.GenerateTunnelKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := proxy.FormatPublicKey(k.Public().(ed25519.PublicKey))
	edge := "edge:\n  key: /k\n  listen: [\":7443\"]\n  tls: [\":443\"]\n  allow: [\"0.0.0.0/0\"]\n  agents:\n    - name: home\n      key: \"" + pub + "\"\n      names: [\"blog.example.com\"]\n"
	if _, err := Parse([]byte(edge)); err != nil {
		t.Fatalf("good edge: %v", err)
	}
	proxySec := "proxy:\n  routes: []\n"
	tunnel := "tunnel:\n  key: /k\n  names: [\"blog.example.com\"]\n  edges:\n    - addr: \"203.0.113.7:7443\"\n      key: \"" + pub + "\"\n"
	if _, err := Parse([]byte(proxySec + tunnel)); err != nil {
		t.Fatalf("good tunnel: %v", err)
	}
	tests := []struct {
		yaml string
		want string
	}{
		{strings.Replace(edge, "  key: /k\n", "", 1), `line 1: edge.key: missing`},
		{strings.Replace(edge, `[":7443"]`, `["7443"]`, 1), `line 3: edge.listen[0]: "7443": want [ip]:port`},
		{strings.Replace(edge, `["0.0.0.0/0"]`, `["lan"]`, 1), `line 5: edge.allow[0]: "lan"`},
		{strings.Replace(edge, "  allow: [\"0.0.0.0/0\"]\n", "", 1), `edge.allow: missing`},
		{strings.Replace(edge, pub, "ed25519:nope", 1), `line 8: edge.agents[0].key: "ed25519:nope": want an ed25519 public key`},
		{strings.Replace(edge, `["blog.example.com"]`, `["*"]`, 1), `line 9: edge.agents[0].names[0]: "*": want a host name or *.suffix`},
		{strings.Replace(edge, `["blog.example.com"]`, `["a*.example.com"]`, 1), `line 9: edge.agents[0].names[0]: "a*.example.com"`},
		{edge + "    - name: home\n      key: \"" + pub + "\"\n      names: [\"x.example.com\"]\n", `line 10: edge.agents[1].name: "home": listed twice (first at edge.agents[0])`},
		{strings.Replace(edge, "      names:", "      nmes:", 1), `line 9: edge.agents[0].nmes: unknown key (did you mean names?)`},
		{tunnel, `tunnel: needs a proxy: section`},
		{proxySec + strings.Replace(tunnel, "203.0.113.7:7443", "203.0.113.7", 1), `line 7: tunnel.edges[0].addr: "203.0.113.7": want host:port`},
		{proxySec + strings.Replace(tunnel, "  names:", "  transport: udp\n  names:", 1), `line 5: tunnel.transport: "udp": want auto, quic or tcp`},
		{proxySec + strings.Replace(tunnel, "  names:", "  keepAlive: often\n  names:", 1), `line 5: tunnel.keepAlive: "often"`},
		{proxySec + strings.Replace(tunnel, "      key: \""+pub+"\"\n", "", 1), `line 7: tunnel.edges[0].key: missing`},
		{proxySec + strings.Replace(tunnel, `["blog.example.com"]`, `[""]`, 1), `line 5: tunnel.names[0]: "": want a host name`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tt.yaml, err, tt.want)
		}
	}
}

// TestEdgePlaceholder: {edge} in an outside view's record stands for the
// addresses of tunnel.edges, one record per edge of the record's family;
// a line that cannot take it is an error naming the record.
func TestEdgePlaceholder(t *testing.T) {
	k, err := proxy.GenerateTunnelKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := proxy.FormatPublicKey(k.Public().(ed25519.PublicKey))
	proxySec := "proxy:\n  routes: []\n"
	tunnel := "tunnel:\n  key: /k\n  names: [\"blog.example.com\"]\n  edges:\n" +
		"    - addr: \"203.0.113.7:7443\"\n      key: \"" + pub + "\"\n" +
		"    - addr: \"198.51.100.9:7443\"\n      tcpAddr: \"198.51.100.9:443\"\n      key: \"" + pub + "\"\n" +
		"    - addr: \"[2001:db8::7]:7443\"\n      key: \"" + pub + "\"\n" +
		"    - addr: \"edge.example.net:7443\"\n      key: \"" + pub + "\"\n"
	dnsSec := func(records ...string) string {
		s := "dns:\n  listen: [\"127.0.0.1:0\"]\n  views:\n    - name: outside\n      zones: [\"example.com\"]\n      records:\n"
		for _, r := range records {
			s += "        - \"" + r + "\"\n"
		}
		return s
	}
	srv := buildDNS(t, proxySec+tunnel+dnsSec("blog.example.com. 300 IN A {edge}", "blog.example.com. 300 IN AAAA {edge}"))
	for qt, want := range map[uint16][]string{
		dns.TypeA:    {"198.51.100.9", "203.0.113.7"},
		dns.TypeAAAA: {"2001:db8::7"},
	} {
		ans := srv.Views[0].Records.Lookup("blog.example.com.", qt)
		var got []string
		for _, rr := range ans.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				got = append(got, rr.A.String())
			case *dns.AAAA:
				got = append(got, rr.AAAA.String())
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", dns.TypeToString[qt], got, want)
		}
	}
	v4only := strings.Replace(tunnel, "    - addr: \"[2001:db8::7]:7443\"\n      key: \""+pub+"\"\n", "", 1)
	for _, tt := range []struct{ yaml, want string }{
		{proxySec + tunnel + dnsSec("blog.example.com. 300 IN MX 10 {edge}"), `dns.views[0].records[0]: "blog.example.com. 300 IN MX 10 {edge}": {edge} stands for an address`},
		{proxySec + v4only + dnsSec("blog.example.com. 300 IN AAAA {edge}"), `dns.views[0].records[0]: "blog.example.com. 300 IN AAAA {edge}": {edge} needs tunnel.edges with an IPv6 address`},
		{dnsSec("blog.example.com. 300 IN A {edge}"), `{edge} needs tunnel.edges with an IPv4 address`},
	} {
		if _, err := Parse([]byte(tt.yaml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse = %v, want error containing %q", err, tt.want)
		}
	}
}
