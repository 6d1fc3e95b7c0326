package dnssplit

import (
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

func TestSelectView(t *testing.T) {
	lan := &View{Name: "lan", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00::/8")}}
	vpn := &View{Name: "vpn", Networks: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/16")},
		LocalAddrs: []netip.Prefix{netip.MustParsePrefix("10.8.0.1/32")}}
	wide := &View{Name: "wide", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}}
	out := &View{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	views := []*View{lan, vpn, wide, out}
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		client  Client
		want    *View
		reason  Reason
		ignored bool
	}{
		{"lan source", Client{Source: a("192.168.1.7")}, lan, ReasonSource, false},
		{"first match wins", Client{Source: a("192.168.1.200")}, lan, ReasonSource, false},
		{"wider later view", Client{Source: a("192.168.2.1")}, wide, ReasonSource, false},
		{"ipv4-mapped source", Client{Source: a("::ffff:192.168.1.7")}, lan, ReasonSource, false},
		{"ipv6 lan", Client{Source: a("fd00::1")}, lan, ReasonSource, false},
		{"internet", Client{Source: a("198.51.100.9")}, out, ReasonSource, false},
		{"local addr matches", Client{Source: a("10.8.0.5"), Local: a("10.8.0.1")}, vpn, ReasonSource, false},
		{"local addr differs", Client{Source: a("10.8.0.5"), Local: a("203.0.113.1")}, out, ReasonSource, false},
		{"local addr unknown", Client{Source: a("10.8.0.5")}, out, ReasonSource, false},
		{"ecs from untrusted ignored", Client{Source: a("198.51.100.9"), Subnet: netip.MustParsePrefix("192.168.1.0/24")}, out, ReasonSource, true},
		{"ecs from trusted proxy", Client{Source: a("127.0.0.1"), Subnet: netip.MustParsePrefix("192.168.1.0/24")}, lan, ReasonClientSubnet, false},
		{"trusted proxy without ecs", Client{Source: a("127.0.0.1")}, out, ReasonSource, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := SelectView(views, trusted, tt.client)
			if c.View != tt.want || c.Reason != tt.reason || c.SubnetIgnored != tt.ignored {
				t.Fatalf("got %v (reason %v, ignored %v), want view %q reason %v ignored %v", c, c.Reason, c.SubnetIgnored, tt.want.Name, tt.reason, tt.ignored)
			}
			if !strings.Contains(c.String(), tt.want.Name) {
				t.Errorf("explanation %q does not name the view", c)
			}
		})
	}
}

func TestSelectViewDefault(t *testing.T) {
	lan := &View{Name: "lan", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}
	def := &View{Name: "default"}
	c := SelectView([]*View{lan, def}, nil, Client{Source: netip.MustParseAddr("8.8.8.8")})
	if c.View != def || c.Reason != ReasonDefault || c.Index != 1 {
		t.Fatalf("got %v", c)
	}
	if c := SelectView(nil, nil, Client{Source: netip.MustParseAddr("8.8.8.8")}); c.View != nil || c.Reason != ReasonNoView {
		t.Fatalf("no views: got %v", c)
	}
}

func TestReasonString(t *testing.T) {
	for r, want := range map[Reason]string{ReasonUnknown: "unknown", ReasonSource: "source", ReasonClientSubnet: "client-subnet", ReasonDefault: "default", ReasonNoView: "no-view"} {
		if r.String() != want {
			t.Errorf("%d: %q, want %q", r, r, want)
		}
	}
}

// A client that matches none of the views gets the last view as the default,
// but never its recursion: recursion is for the networks written down, so a
// single recursive "inside" view does not make an open resolver.
func TestDefaultViewDoesNotRecurse(t *testing.T) {
	var asked atomic.Int32
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		asked.Add(1)
		answerA("198.51.100.7", 60)(w, r)
	})
	inside := new(Records)
	if err := inside.AddString("blog.example.com. 300 IN A 192.168.1.20"); err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Views: []*View{{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
			Recursion: true, Records: inside}},
		Upstreams: []Upstream{{Addr: up}},
	}
	t.Cleanup(func() { s.Close() })
	for _, tc := range []struct {
		from  string
		rcode int
		asked int32
		ra    bool
	}{
		{"203.0.113.9", dns.RcodeRefused, 0, false},
		{"192.168.1.5", dns.RcodeSuccess, 1, true},
	} {
		m := new(dns.Msg)
		m.SetQuestion("elsewhere.example.net.", dns.TypeA)
		r := s.Resolve(t.Context(), m, Client{Source: netip.MustParseAddr(tc.from)}, false)
		if r == nil || r.Rcode != tc.rcode || asked.Load() != tc.asked || r.RecursionAvailable != tc.ra {
			t.Fatalf("from %s: got %v (upstream asked %d times), want rcode %s, asked %d, RA %v",
				tc.from, r, asked.Load(), dns.RcodeToString[tc.rcode], tc.asked, tc.ra)
		}
	}
	if got := s.Explain(netip.MustParseAddr("203.0.113.9"), netip.Addr{}).String(); !strings.Contains(got, "without its recursion") {
		t.Errorf("Explain: %s", got)
	}
	// The local data of the default view still answers.
	m := new(dns.Msg)
	m.SetQuestion("blog.example.com.", dns.TypeA)
	r := s.Resolve(t.Context(), m, Client{Source: netip.MustParseAddr("203.0.113.9")}, false)
	if r == nil || firstA(r) != "192.168.1.20" || !r.Authoritative {
		t.Fatalf("local name from outside: %v", r)
	}
}
