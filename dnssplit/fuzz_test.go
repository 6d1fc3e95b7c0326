package dnssplit

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func fuzzServer(t testing.TB) *Server {
	recs := new(Records)
	if err := recs.LoadZone(strings.NewReader(testZone), "example.com.", "fuzz"); err != nil {
		t.Fatal(err)
	}
	return &Server{
		Views: []*View{
			{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Recursion: true, Records: recs},
			{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: recs},
		},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")},
		RateLimit:      &RateLimit{PerSecond: 1e6},
		Transfer:       &Transfer{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, TSIG: map[string]string{"k.": "c2VjcmV0"}},
	}
}

// FuzzServeDNS feeds raw packets to the server as UDP and TCP queries from
// inside and outside: no panic, no hang (there are no upstreams, so nothing
// may wait), and any reply parses and answers the query's ID.
func FuzzServeDNS(f *testing.F) {
	for _, m := range []*dns.Msg{
		q("blog.example.com.", dns.TypeA),
		q("x.apps.example.com.", dns.TypeAAAA),
		q("www.example.net.", dns.TypeA),
		q("example.com.", dns.TypeANY),
		q("example.com.", dns.TypeAXFR),
		func() *dns.Msg {
			m := q("blog.example.com.", dns.TypeA)
			m.SetEdns0(4096, true)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: []byte{10, 1, 2, 0}})
			return m
		}(),
		func() *dns.Msg {
			m := q("example.com.", dns.TypeIXFR)
			m.SetTsig("k.", dns.HmacSHA256, 300, 0)
			return m
		}(),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false, true)
	}
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff}, true, false)
	s := fuzzServer(f)
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, b []byte, tcp, inside bool) {
		src := netip.MustParseAddrPort("198.51.100.1:5353")
		if inside {
			src = netip.MustParseAddrPort("10.0.0.1:5353")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		out := s.handle(ctx, b, src, netip.MustParseAddr("10.0.0.53"), tcp)
		if time.Since(start) > 5*time.Second { // generous: CI machines are loaded
			t.Fatalf("query took %v", time.Since(start))
		}
		if isTransfer(b) {
			s.serveTransfer(b, src, netip.Addr{}, func([]byte) error { return nil })
		}
		if out == nil {
			return
		}
		var r dns.Msg
		if err := r.Unpack(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if len(b) >= 2 && r.Id != uint16(b[0])<<8|uint16(b[1]) {
			t.Fatalf("reply ID %d does not match", r.Id)
		}
		if !tcp && len(out) > defaultUDPSize {
			t.Fatalf("UDP reply of %d bytes", len(out))
		}
	})
}

// FuzzUpstreamAnswer feeds raw upstream answers to validate and scrub, the
// path every forwarded answer takes: no panic, and what scrub keeps is only
// the question's chain (no additional records, no NS, TTLs capped).
func FuzzUpstreamAnswer(f *testing.F) {
	seed := func(name string, qtype uint16, rrs ...string) {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.Response = true
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			switch rr.Header().Rrtype {
			case dns.TypeSOA, dns.TypeNS:
				m.Ns = append(m.Ns, rr)
			default:
				m.Answer = append(m.Answer, rr)
			}
		}
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "glue.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 9}, A: []byte{6, 6, 6, 6}})
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, qtype, true)
	}
	seed("a.example.net.", dns.TypeA, "a.example.net. 2147483647 IN A 198.51.100.9", "blog.example.com. 60 IN A 6.6.6.6")
	seed("c.example.net.", dns.TypeA, "c.example.net. 60 IN CNAME d.example.net.", "d.example.net. 60 IN CNAME c.example.net.")
	seed("x.sub.example.net.", dns.TypeA, "sub.example.net. 60 IN DNAME example.org.", "x.sub.example.net. 60 IN CNAME x.example.org.", "x.example.org. 60 IN A 192.0.2.1")
	seed("n.example.net.", dns.TypeAAAA, "example.net. 60 IN SOA a. b. 1 2 3 4 60", "example.net. 60 IN NS ns.evil.test.")
	const maxTTL = time.Hour
	f.Fuzz(func(t *testing.T, b []byte, qtype uint16, do bool) {
		r := new(dns.Msg)
		if r.Unpack(b) != nil || len(r.Question) != 1 {
			return
		}
		q := dns.Question{Name: r.Question[0].Name, Qtype: qtype, Qclass: dns.ClassINET}
		query := new(dns.Msg)
		query.Id = r.Id
		query.Question = []dns.Question{q}
		if validate(query, r) != nil {
			return
		}
		out, _, err := scrub(q, r, do, maxTTL)
		if err != nil {
			return
		}
		if len(out.Extra) != 0 {
			t.Fatalf("additional records kept: %v", out.Extra)
		}
		for _, sec := range [][]dns.RR{out.Answer, out.Ns} {
			for _, rr := range sec {
				h := rr.Header()
				if h.Ttl > uint32(maxTTL/time.Second) {
					t.Fatalf("TTL not capped: %v", rr)
				}
				if h.Rrtype == dns.TypeNS && q.Qtype != dns.TypeNS && q.Qtype != dns.TypeANY {
					t.Fatalf("NS kept for a %s query: %v", dns.TypeToString[q.Qtype], rr)
				}
			}
		}
	})
}
