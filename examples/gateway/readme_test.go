package main

import (
	"net/netip"
	"testing"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/examples/internal/proctest"
)

// TestREADMEDNSSnippet runs the code of README.md's dnssplit snippet (with
// the upstream on loopback): inside and outside answers, recursion through
// the upstream for the inside view, and SERVFAIL without an upstream.
func TestREADMEDNSSnippet(t *testing.T) {
	snippet := func(upstreams []dnssplit.Upstream) *dnssplit.Server {
		inside, outside := new(dnssplit.Records), new(dnssplit.Records)
		inside.AddString("blog.example.com. 300 IN A 192.168.1.20")
		outside.AddString("blog.example.com. 300 IN A 203.0.113.1")
		return &dnssplit.Server{
			Upstreams: upstreams,
			Views: []*dnssplit.View{
				{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}, Records: inside, Recursion: true},
				{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: outside},
			},
		}
	}
	ask := func(srv *dnssplit.Server, src, name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.RecursionDesired = true
		return srv.Resolve(t.Context(), m, dnssplit.Client{Source: netip.MustParseAddr(src)}, false)
	}
	answer := func(r *dns.Msg) string {
		if len(r.Answer) != 1 {
			return dns.RcodeToString[r.Rcode]
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	srv := snippet([]dnssplit.Upstream{{Addr: netip.MustParseAddrPort(proctest.FakeUpstream(t))}})
	defer srv.Close()
	for _, tt := range []struct{ src, name, want string }{
		{"192.168.1.7", "blog.example.com.", "192.168.1.20"},
		{"198.51.100.9", "blog.example.com.", "203.0.113.1"},
		{"192.168.1.7", "www.example.org.", "192.0.2.99"},
		{"198.51.100.9", "www.example.org.", "REFUSED"},
	} {
		if got := answer(ask(srv, tt.src, tt.name)); got != tt.want {
			t.Errorf("%s asks %s: %s, want %s", tt.src, tt.name, got, tt.want)
		}
	}
	bare := snippet(nil)
	defer bare.Close()
	if got := answer(ask(bare, "192.168.1.7", "www.example.org.")); got != "SERVFAIL" {
		t.Errorf("recursion with no upstream: %s, want SERVFAIL", got)
	}
}
