package dnssplit

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

func TestSetViewsSwapsAnswers(t *testing.T) {
	mk := func(addr string) []*View {
		r := new(Records)
		if err := r.AddString("blog.example.com. 300 IN A " + addr); err != nil {
			t.Fatal(err)
		}
		return []*View{{Name: "all", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: r}}
	}
	s := &Server{Views: mk("192.0.2.1")}
	defer s.Close()
	ask := func() string {
		req := new(dns.Msg)
		req.SetQuestion("blog.example.com.", dns.TypeA)
		resp := s.Resolve(t.Context(), req, Client{Source: netip.MustParseAddr("198.51.100.7")}, false)
		if len(resp.Answer) != 1 {
			t.Fatalf("answer: %v", resp)
		}
		return resp.Answer[0].(*dns.A).A.String()
	}
	if got := ask(); got != "192.0.2.1" {
		t.Fatalf("before: %s", got)
	}
	s.SetViews(mk("192.0.2.2"))
	if got := ask(); got != "192.0.2.2" {
		t.Fatalf("after SetViews: %s", got)
	}
}
