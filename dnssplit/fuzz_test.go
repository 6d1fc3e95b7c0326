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
