package dnssplit

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// rawQuery packs a query with id and, when edns, an OPT record.
func rawQuery(t *testing.T, name string, qtype uint16, id uint16, edns bool) []byte {
	t.Helper()
	m := q(name, qtype)
	m.Id = id
	if edns {
		m.SetEdns0(1232, true)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unpack(t *testing.T, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m
}

// TestAnswerCacheSameBytes: a repeated query is answered from the packed
// cache with exactly the bytes the full path makes, the ID patched in.
func TestAnswerCacheSameBytes(t *testing.T) {
	s := splitServer(t)
	defer s.Close()
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	for _, edns := range []bool{false, true} {
		for _, name := range []string{"blog.example.com.", "BloG.Example.COM.", "nothing.example.com."} {
			first := s.handle(t.Context(), rawQuery(t, name, dns.TypeA, 1, edns), src, netip.Addr{}, false)
			hits := s.answers.hits.Load()
			second := s.handle(t.Context(), rawQuery(t, name, dns.TypeA, 0xbeef, edns), src, netip.Addr{}, false)
			if s.answers.hits.Load() != hits+1 {
				t.Fatalf("%s edns=%v: the repeated query was not answered from the cache", name, edns)
			}
			if second[0] != 0xbe || second[1] != 0xef {
				t.Fatalf("%s: cached reply has ID %x, want beef", name, second[:2])
			}
			if !bytes.Equal(first[2:], second[2:]) {
				t.Fatalf("%s edns=%v: cached reply differs from the full path's:\n%x\n%x", name, edns, first, second)
			}
			if got := unpack(t, second).Question[0].Name; got != name {
				t.Errorf("question spelt %q in the reply, want %q as asked", got, name)
			}
		}
	}
	st := s.Stats()
	total := uint64(0)
	for _, m := range st.Queries {
		for _, n := range m {
			total += n
		}
	}
	if total != 12 {
		t.Errorf("stats count %d answers, want 12 (cached ones included): %v", total, st.Queries)
	}
}

// TestAnswerCacheFollowsChanges: a change of the records or of the views is
// seen by the next query; the cache never serves the old answer.
func TestAnswerCacheFollowsChanges(t *testing.T) {
	s := splitServer(t)
	defer s.Close()
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	ask := func() string {
		out := s.handle(t.Context(), rawQuery(t, "blog.example.com.", dns.TypeA, 7, false), src, netip.Addr{}, false)
		return firstA(unpack(t, out))
	}
	if a := ask(); a != "192.168.1.20" {
		t.Fatalf("first answer %s", a)
	}
	ask() // cached now
	rr, _ := ParseRecord("blog.example.com. 300 IN A 192.168.1.99")
	if err := s.Views[0].Records.Set("blog.example.com.", dns.TypeA, rr); err != nil {
		t.Fatal(err)
	}
	if a := ask(); a != "192.168.1.99" {
		t.Fatalf("after Set: %s, want 192.168.1.99", a)
	}
	recs := new(Records)
	if err := recs.AddString("blog.example.com. 300 IN A 192.168.1.42"); err != nil {
		t.Fatal(err)
	}
	ask()
	s.SetViews([]*View{{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Records: recs}})
	if a := ask(); a != "192.168.1.42" {
		t.Fatalf("after SetViews: %s, want 192.168.1.42", a)
	}
	s.Views[0].Records.Remove("blog.example.com.") // the old view's records: no effect now
	recs.Remove("blog.example.com.")
	if out := unpack(t, s.handle(t.Context(), rawQuery(t, "blog.example.com.", dns.TypeA, 7, false), src, netip.Addr{}, false)); len(out.Answer) != 0 {
		t.Fatalf("after Remove: %v", out.Answer)
	}
}

// TestAnswerCacheKeepsViewsApart: the same query bytes from clients of two
// views get each view's answer, cached or not.
func TestAnswerCacheKeepsViewsApart(t *testing.T) {
	s := splitServer(t)
	defer s.Close()
	in, out := netip.MustParseAddrPort("127.0.0.2:5353"), netip.MustParseAddrPort("198.51.100.9:5353")
	raw := rawQuery(t, "blog.example.com.", dns.TypeA, 9, false)
	for range 3 {
		if a := firstA(unpack(t, s.handle(t.Context(), raw, in, netip.Addr{}, false))); a != "192.168.1.20" {
			t.Fatalf("inside client got %s", a)
		}
		if a := firstA(unpack(t, s.handle(t.Context(), raw, out, netip.Addr{}, false))); a != "203.0.113.1" {
			t.Fatalf("outside client got %s", a)
		}
	}
	if s.answers.hits.Load() < 4 {
		t.Fatalf("only %d cache hits over six queries", s.answers.hits.Load())
	}
}

// TestAnswerCacheNotClientSpecific: queries whose reply depends on the client
// beyond its view (a cookie, a client subnet, TCP, IXFR) are never served
// from the cache, and neither are forwarded answers.
func TestAnswerCacheNotClientSpecific(t *testing.T) {
	up, _ := upstream(t, answerA("198.51.100.1", 300))
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	defer s.Close()
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	cookie := q("blog.example.com.", dns.TypeA)
	cookie.SetEdns0(1232, false)
	cookie.IsEdns0().Option = append(cookie.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
	cb, _ := cookie.Pack()
	ecs := q("blog.example.com.", dns.TypeA)
	ecs.SetEdns0(1232, false)
	ecs.IsEdns0().Option = append(ecs.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: netip.MustParseAddr("192.0.2.0").AsSlice()})
	eb, _ := ecs.Pack()
	for name, raw := range map[string][]byte{
		"cookie":    cb,
		"ecs":       eb,
		"forwarded": rawQuery(t, "www.example.net.", dns.TypeA, 3, false),
		"ixfr":      rawQuery(t, "example.com.", dns.TypeIXFR, 3, false),
	} {
		for range 3 {
			s.handle(t.Context(), raw, src, netip.Addr{}, false)
		}
		if n := s.answers.hits.Load(); n != 0 {
			t.Fatalf("%s: %d answers from the cache", name, n)
		}
	}
	raw := rawQuery(t, "blog.example.com.", dns.TypeA, 3, false)
	for range 3 {
		s.handle(t.Context(), raw, src, netip.Addr{}, true)
	}
	if n := s.answers.hits.Load(); n != 0 {
		t.Fatalf("tcp: %d answers from the cache", n)
	}
}

// TestAnswerCacheRateLimited: cached answers pass the rate limit like any
// other: one source flooding one name is limited (dropped and slipped) while
// another source keeps its answers.
func TestAnswerCacheRateLimited(t *testing.T) {
	s := splitServer(t)
	s.RateLimit = &RateLimit{PerSecond: 1, Burst: 5, IPv4Prefix: 32}
	defer s.Close()
	flood, other := netip.MustParseAddrPort("198.51.100.7:5353"), netip.MustParseAddrPort("198.51.100.8:5353")
	raw := rawQuery(t, "blog.example.com.", dns.TypeA, 5, false)
	answered, slipped, dropped := 0, 0, 0
	for range 200 {
		out := s.handle(t.Context(), raw, flood, netip.Addr{}, false)
		switch {
		case out == nil:
			dropped++
		case unpack(t, out).Truncated:
			slipped++
		default:
			answered++
		}
	}
	if answered > 10 || dropped == 0 || slipped == 0 {
		t.Fatalf("flood of 200: %d answered, %d slipped, %d dropped; want at most the burst answered, some of each other", answered, slipped, dropped)
	}
	if s.answers.hits.Load() == 0 {
		t.Fatal("no answer came from the cache: the test does not test it")
	}
	if out := s.handle(t.Context(), raw, other, netip.Addr{}, false); out == nil || firstA(unpack(t, out)) != "203.0.113.1" {
		t.Fatal("another source is not answered during the flood")
	}
	if got := s.Stats().RateLimited; got != uint64(slipped+dropped) {
		t.Errorf("Stats.RateLimited = %d, want %d", got, slipped+dropped)
	}
}

// TestAnswerCacheBounded: a flood of distinct names keeps the cache at its
// bound.
func TestAnswerCacheBounded(t *testing.T) {
	s := splitServer(t)
	defer s.Close()
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	for i := range answerCacheSize + 500 {
		s.handle(t.Context(), rawQuery(t, fmt.Sprintf("n%d.example.com.", i), dns.TypeA, 1, false), src, netip.Addr{}, false)
	}
	s.answers.mu.RLock()
	n := len(s.answers.m)
	s.answers.mu.RUnlock()
	if n > answerCacheSize || n < answerCacheSize/2 {
		t.Fatalf("%d entries after %d distinct names, bound %d", n, answerCacheSize+500, answerCacheSize)
	}
}
