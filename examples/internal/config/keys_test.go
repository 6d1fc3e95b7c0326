package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/miekg/dns"
)

// TestMessagesNameKeyAndLine: every kind of mistake names its key path and
// its own line, on one line.
func TestMessagesNameKeyAndLine(t *testing.T) {
	views := "dns:\n  views:\n    - name: inside\n      networks: [\"192.168.1.0/24\"]\n"
	tests := []struct {
		name, in string
		want     []string
	}{
		{"misspelt key with a suggestion", views + "      recurson: true\n",
			[]string{"line 5: dns.views[0].recurson: unknown key (did you mean recursion?)"}},
		{"case slip", views + "      Recursion: true\n", []string{"line 5: dns.views[0].Recursion: unknown key (did you mean recursion?)"}},
		{"unknown key far from any", "relay:\n  zzzzqqq: 1\n", []string{"line 2: relay.zzzzqqq: unknown key"}},
		{"text for a number", "dns:\n  udpSize: big\n", []string{`line 2: dns.udpSize: "big": want a whole number`}},
		{"list for a value", "metrics: [\"a\", \"b\"]\n", []string{"line 1: metrics: want a single value, got a list"}},
		{"value for a list", "dns:\n  listen: 127.0.0.1:53\n", []string{"line 2: dns.listen: want a list"}},
		{"value for a section", "relay: yes\n", []string{"line 1: relay: want a section"}},
		{"bool", views + "      recursion: maybe\n", []string{`line 5: dns.views[0].recursion: "maybe": want true or false`}},
		{"duplicate key", "metrics: 127.0.0.1:1\nmetrics: 127.0.0.1:2\n", []string{"line 2: metrics: duplicate key (first at line 1)"}},
		// An indentation slip: yaml itself blames line 3, where the list began.
		{"indentation slip in a list", "dns:\n  listen: [\"127.0.0.1:53\"]\n  views:\n    - name: x\n     networks: [\"10.0.0.0/8\"]\n",
			[]string{"line 5: "}},
		{"indentation slip after a list", "dns:\n  views:\n    - name: x\n      networks: [\"10.0.0.0/8\"]\n   records: []\n",
			[]string{"line 5: "}},
		{"two mistakes, one line", views + "      recurson: true\n      zones: 5\n",
			[]string{"line 5: dns.views[0].recurson", "line 6: dns.views[0].zones"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "config: ") {
				t.Errorf("error is not one line starting with the package: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

// TestMultiLineFlowListIsNotASlip: a list spread over lines parses, and a
// later slip is still found at its own line.
func TestMultiLineFlowListIsNotASlip(t *testing.T) {
	doc := "dns:\n  listen: [\n    \"127.0.0.1:53\",\n    \"127.0.0.2:53\"]\n  views:\n    - name: x\n     networks: []\n"
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "line 7: ") {
		t.Fatalf("got %v, want line 7", err)
	}
	if _, err := Parse([]byte(doc[:strings.Index(doc, "  views:")])); err != nil {
		t.Fatalf("a multi-line flow list: %v", err)
	}
}

func TestErrorsListsEach(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(path, []byte("metrics: x\nlog:\n  level: loud\n"), 0o600)
	_, err := Load(path)
	if err == nil {
		t.Fatal("no error")
	}
	if !strings.HasPrefix(err.Error(), "config: "+path+": line 1: metrics") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Load error %q", err)
	}
	list := Errors(err)
	if len(list) != 2 || !strings.Contains(list[1].Error(), "config: "+path+": line 3: log.level") {
		t.Errorf("Errors = %q", list)
	}
}

// TestPublicStandInByType: the record's type, not the words on the line,
// decides which family {public} takes.
func TestPublicStandInByType(t *testing.T) {
	f, err := Parse([]byte(`dns:
  views:
    - name: all
      networks: ["0.0.0.0/0", "::/0"]
      records:
        - "aaaa.example.com. 60 IN A {public}"
        - "a.example.com. 60 IN AAAA {public}"
        - "txt.example.com. 60 IN TXT \"at {public}\""
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	srv, setPublic, err := f.DNS.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, a := range []string{"203.0.113.5", "2001:db8::5"} {
		if err := setPublic(netip.MustParseAddr(a)); err != nil {
			t.Fatalf("setPublic(%s): %v", a, err)
		}
	}
	for _, q := range []struct {
		name string
		typ  uint16
		want string
	}{{"aaaa.example.com.", dns.TypeA, "203.0.113.5"}, {"a.example.com.", dns.TypeAAAA, "2001:db8::5"}, {"txt.example.com.", dns.TypeTXT, "2001:db8::5"}} {
		name, want := q.name, q.want
		req := new(dns.Msg)
		req.SetQuestion(name, q.typ)
		var got string
		for _, rr := range srv.Resolve(t.Context(), req, dnssplit.Client{Source: netip.MustParseAddr("198.51.100.1")}, false).Answer {
			got += rr.String()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %s", name, got, want)
		}
	}
	if _, err := Parse([]byte("dns:\n  views:\n    - name: v\n      records: [\"x.example.com. IN MX {public}\"]\n")); err == nil ||
		!strings.Contains(err.Error(), "dns.views[0].records[0]") {
		t.Errorf("MX with an address: %v", err)
	}
}

// TestDurationsOneMeaningOfZero: "0s" is never silently the default for one
// key and "never" for another.
func TestDurationsOneMeaningOfZero(t *testing.T) {
	for _, in := range []string{
		"dns:\n  upstreamTimeout: 0s\n",
		"dns:\n  cache:\n    stale: 0s\n",
		"proxy:\n  peekTimeout: 0s\n",
		"relay:\n  listen: [\"127.0.0.1:3478\"]\n  secret: s\n  maxCredentialLifetime: 0s\n",
		"nat:\n  public: 203.0.113.1\n  interval: 0s\n",
		"proxy:\n  peekTimeout: off\n",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), "positive duration") {
			t.Errorf("%q: %v, want a positive-duration error", in, err)
		}
	}
	srv := buildDNS(t, "dns:\n  cache:\n    stale: off\n")
	if srv.Cache.StaleFor >= 0 {
		t.Errorf("stale: off gave %v", srv.Cache.StaleFor)
	}
}

func TestPrefixesOneParser(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.7":         "192.168.1.7/32",
		"192.168.1.7/24":      "192.168.1.0/24",
		"2001:db8::1":         "2001:db8::1/128",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"::ffff:192.168.1.1":  "192.168.1.1/32",
		"2001:db8:1::5/48":    "2001:db8:1::/48",
	} {
		p, ok := parsePrefix(in)
		if !ok || p.String() != want {
			t.Errorf("parsePrefix(%q) = %v %v, want %s", in, p, ok, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "fe80::1%eth0", "host.example"} {
		if _, ok := parsePrefix(in); ok {
			t.Errorf("parsePrefix(%q) accepted", in)
		}
	}
}

func TestListenerClashes(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"tls and http on one address", "proxy:\n  tls: [\"127.0.0.1:8443\"]\n  http: [\"127.0.0.1:8443\"]\n",
			"line 3: proxy.http[0]: \"127.0.0.1:8443\": tcp port 8443 is already used by proxy.tls[0] (line 2)"},
		{"wildcard covers a specific address", "proxy:\n  tls: [\":443\"]\nmetrics: \"127.0.0.1:443\"\n", "metrics"},
		{"dns and relay udp", "dns:\n  listen: [\"0.0.0.0:3478\"]\nrelay:\n  listen: [\"192.0.2.1:3478\"]\n  secret: s\n", "relay.listen[0]"},
		{"same list twice", "dns:\n  listen: [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n", "dns.listen[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	for _, ok := range []string{
		"proxy:\n  tls: [\"127.0.0.1:0\"]\n  http: [\"127.0.0.1:0\"]\n",
		"proxy:\n  tls: [\"127.0.0.1:443\"]\n  http: [\"127.0.0.2:443\"]\n",
		"proxy:\n  tls: [\"0.0.0.0:443\"]\nmetrics: \"[2001:db8::1]:443\"\n",
	} {
		if _, err := Parse([]byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// buildDNS parses yaml and builds its dns: section; the server is closed
// when the test ends.
func buildDNS(t *testing.T, yaml string) *dnssplit.Server {
	t.Helper()
	f, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := f.DNS.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}
