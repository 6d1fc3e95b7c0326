package dnssplit

import (
	"bytes"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

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
// from the cache.
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
		"cookie": cb,
		"ecs":    eb,
		"ixfr":   rawQuery(t, "example.com.", dns.TypeIXFR, 3, false),
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

// fwdUpstream is an upstream whose answer the test changes: A records of
// ip (n of them) with ttl, or rcode; NXDOMAIN comes with an SOA.
type fwdUpstream struct {
	ip    atomic.Value // string
	ttl   atomic.Uint32
	n     atomic.Int32
	rcode atomic.Int32
	asked atomic.Int32
	seen  chan struct{} // one value per question asked
}

func newFwdUpstream(t *testing.T, ip string, ttl uint32) (*fwdUpstream, netip.AddrPort) {
	u := &fwdUpstream{seen: make(chan struct{}, 100)}
	u.ip.Store(ip)
	u.ttl.Store(ttl)
	u.n.Store(1)
	addr, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		u.asked.Add(1)
		select {
		case u.seen <- struct{}{}:
		default:
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Rcode = int(u.rcode.Load())
		switch {
		case m.Rcode == dns.RcodeNameError:
			soa, _ := dns.NewRR(fmt.Sprintf("example.net. %d IN SOA ns.example.net. host.example.net. 1 3600 600 86400 %d", u.ttl.Load()+50, u.ttl.Load()))
			m.Ns = append(m.Ns, soa)
		case m.Rcode == dns.RcodeSuccess && r.Question[0].Qtype == dns.TypeA:
			for i := range u.n.Load() {
				rr, _ := dns.NewRR(fmt.Sprintf("%s %d IN A %s", r.Question[0].Name, u.ttl.Load()+uint32(i), u.ip.Load()))
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})
	return u, addr
}

// fwdServer is splitServer forwarding to up, with its cache on a clock the
// test moves (returned).
func fwdServer(t *testing.T, up netip.AddrPort, prefetch bool) (*Server, *atomic.Int64) {
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	s.UpstreamTimeout = 300 * time.Millisecond
	s.Cache.Prefetch = prefetch
	s.init()
	var clock atomic.Int64
	clock.Store(time.Unix(1e9, 0).UnixNano())
	s.cache.setClock(func() time.Time { return time.Unix(0, clock.Load()) })
	t.Cleanup(func() { s.Close() })
	return s, &clock
}

// fullPath answers raw through Resolve (no answer cache) and packs it as
// handle does.
func fullPath(t *testing.T, s *Server, raw []byte, src netip.AddrPort) []byte {
	t.Helper()
	req := unpack(t, raw)
	m := s.Resolve(t.Context(), req, Client{Source: src.Addr()}, false)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAnswerCacheForwarded: a forwarded answer taken from a fresh cache
// entry is served from the packed cache, byte for byte what the full path
// makes at that moment: the ID patched, every TTL (answer and authority)
// reduced by the entry's age, the OPT untouched.
func TestAnswerCacheForwarded(t *testing.T) {
	u, up := newFwdUpstream(t, "198.51.100.7", 300)
	u.n.Store(3)
	s, clock := fwdServer(t, up, false)
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	for _, c := range []struct {
		name  string
		edns  bool
		rcode int
	}{
		{"www.example.net.", false, dns.RcodeSuccess},
		{"WwW.Example.NET.", true, dns.RcodeSuccess},
		{"nx.example.net.", true, dns.RcodeNameError},
	} {
		u.rcode.Store(int32(c.rcode))
		for i := range 2 { // upstream, then the cache's full path (packed there)
			s.handle(t.Context(), rawQuery(t, c.name, dns.TypeA, uint16(i), c.edns), src, netip.Addr{}, false)
		}
		for _, step := range []time.Duration{0, 1500 * time.Millisecond, 7 * time.Second, 40 * time.Second} {
			clock.Add(int64(step))
			hits, cacheHits := s.answers.hits.Load(), s.Stats().CacheHits
			got := s.handle(t.Context(), rawQuery(t, c.name, dns.TypeA, 0xbeef, c.edns), src, netip.Addr{}, false)
			if s.answers.hits.Load() != hits+1 {
				t.Fatalf("%s after %v: not answered from the packed cache", c.name, step)
			}
			if s.Stats().CacheHits != cacheHits+1 {
				t.Errorf("%s: Stats.CacheHits not counted on the packed path", c.name)
			}
			want := fullPath(t, s, rawQuery(t, c.name, dns.TypeA, 0xbeef, c.edns), src)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s after %v: packed reply differs from the full path's:\n%v\n%v", c.name, step, unpack(t, got), unpack(t, want))
			}
		}
		m := unpack(t, s.handle(t.Context(), rawQuery(t, c.name, dns.TypeA, 1, c.edns), src, netip.Addr{}, false))
		for _, rr := range append(m.Answer, m.Ns...) {
			if ttl := rr.Header().Ttl; ttl > 300+2+50-48 {
				t.Errorf("%s: TTL %d after 48.5 s, not aged: %v", c.name, ttl, rr)
			}
		}
		if opt := m.IsEdns0(); c.edns && (opt == nil || !opt.Do()) {
			t.Errorf("%s: OPT lost its DO flag: %v", c.name, opt)
		}
	}
	if n := u.asked.Load(); n != 3 {
		t.Errorf("upstream asked %d times, want 3 (once per name)", n)
	}
}

// TestAnswerCacheForwardedFollowsCache: the packed cache never serves what
// the cache of forwarded answers would not: past the TTL the upstream's new
// answer is served, a replaced entry's answer at once, a local record added
// for the name wins, and a reload (SetViews) is seen by the next query.
func TestAnswerCacheForwardedFollowsCache(t *testing.T) {
	u, up := newFwdUpstream(t, "198.51.100.1", 10)
	s, clock := fwdServer(t, up, false)
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	ask := func() *dns.Msg {
		return unpack(t, s.handle(t.Context(), rawQuery(t, "a.example.net.", dns.TypeA, 7, false), src, netip.Addr{}, false))
	}
	warm := func(want string) {
		t.Helper()
		for range 3 {
			if a := firstA(ask()); a != want {
				t.Fatalf("got %s, want %s", a, want)
			}
		}
		if s.answers.hits.Load() == 0 {
			t.Fatal("no answer from the packed cache: the test does not test it")
		}
	}
	warm("198.51.100.1")

	u.ip.Store("198.51.100.2") // the upstream changes its answer; the entry is fresh for 10 s
	clock.Add(int64(9 * time.Second))
	if a := firstA(ask()); a != "198.51.100.1" {
		t.Fatalf("within the TTL: %s", a)
	}
	clock.Add(int64(1 * time.Second)) // 10 s: expired
	hits := s.answers.hits.Load()
	if a := firstA(ask()); a != "198.51.100.2" {
		t.Fatalf("after the TTL: %s, want the upstream's new answer", a)
	}
	if s.answers.hits.Load() != hits {
		t.Fatal("an expired entry was served from the packed cache")
	}
	warm("198.51.100.2")

	// Replaced in the cache (a prefetch or another query's refresh).
	r := new(dns.Msg)
	r.SetQuestion("a.example.net.", dns.TypeA)
	rr, _ := dns.NewRR("a.example.net. 60 IN A 198.51.100.3")
	r.Answer = []dns.RR{rr}
	s.cache.put(cacheKey{View: "inside", Name: "a.example.net.", Type: dns.TypeA, Class: dns.ClassINET}, r)
	if a := firstA(ask()); a != "198.51.100.3" {
		t.Fatalf("after the entry was replaced: %s", a)
	}
	warm("198.51.100.3")

	// A local record for the name: the view answers it itself.
	if err := s.Views[0].Records.AddString("a.example.net. 300 IN A 192.168.1.50"); err != nil {
		t.Fatal(err)
	}
	if a := firstA(ask()); a != "192.168.1.50" {
		t.Fatalf("after a local record was added: %s", a)
	}
	s.Views[0].Records.Remove("a.example.net.")
	warm("198.51.100.3")

	// A reload that takes recursion away.
	s.SetViews([]*View{{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Records: new(Records)}})
	if m := ask(); m.Rcode != dns.RcodeRefused {
		t.Fatalf("after SetViews without recursion: %s %v", dns.RcodeToString[m.Rcode], m.Answer)
	}
}

// TestAnswerCacheForwardedNotCached: forwarded replies that are not a fresh
// cache entry's as a whole are never packed: upstream failures (SERVFAIL,
// not cached), stale answers (they carry an EDE), truncated replies, and
// client-specific ones (a cookie).
func TestAnswerCacheForwardedNotCached(t *testing.T) {
	u, up := newFwdUpstream(t, "198.51.100.1", 10)
	s, clock := fwdServer(t, up, false)
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	askN := func(raw []byte) *dns.Msg {
		var m *dns.Msg
		for range 4 {
			m = unpack(t, s.handle(t.Context(), raw, src, netip.Addr{}, false))
		}
		if n := s.answers.hits.Load(); n != 0 {
			t.Fatalf("%v: %d answers from the packed cache", m.Question, n)
		}
		return m
	}
	u.rcode.Store(dns.RcodeServerFailure)
	if m := askN(rawQuery(t, "fail.example.net.", dns.TypeA, 1, false)); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("upstream failure: %s", dns.RcodeToString[m.Rcode])
	}
	u.rcode.Store(dns.RcodeSuccess)
	u.n.Store(60) // 60 A records do not fit 512 bytes
	if m := askN(rawQuery(t, "big.example.net.", dns.TypeA, 1, false)); !m.Truncated {
		t.Fatal("60 A records without EDNS: not truncated")
	}
	u.n.Store(1)
	cookie := q("c.example.net.", dns.TypeA)
	cookie.SetEdns0(1232, false)
	cookie.IsEdns0().Option = append(cookie.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
	cb, _ := cookie.Pack()
	askN(cb)
	// Stale: fill the cache over the full path only (Resolve), then stop
	// the upstream answering and let the entry expire.
	stale := rawQuery(t, "stale.example.net.", dns.TypeA, 1, true)
	s.Resolve(t.Context(), unpack(t, stale), Client{Source: src.Addr()}, false)
	u.rcode.Store(dns.RcodeServerFailure)
	clock.Add(int64(11 * time.Second))
	if m := askN(stale); firstA(m) != "198.51.100.1" {
		t.Fatalf("stale answer: %v", m)
	}
}

// TestAnswerCacheForwardedPrefetch: with Prefetch, packed replies stop at
// the refresh window, so the cache sees the hits and refreshes the entry
// before it expires.
func TestAnswerCacheForwardedPrefetch(t *testing.T) {
	u, up := newFwdUpstream(t, "198.51.100.1", 100)
	s, clock := fwdServer(t, up, true)
	src := netip.MustParseAddrPort("127.0.0.2:5353")
	raw := rawQuery(t, "p.example.net.", dns.TypeA, 1, false)
	for range 5 {
		s.handle(t.Context(), raw, src, netip.Addr{}, false)
	}
	if s.answers.hits.Load() == 0 {
		t.Fatal("no answer from the packed cache")
	}
	clock.Add(int64(95 * time.Second)) // in the last tenth of the TTL
	hits := s.answers.hits.Load()
	s.handle(t.Context(), raw, src, netip.Addr{}, false)
	if s.answers.hits.Load() != hits {
		t.Fatal("a packed reply was served in the prefetch window")
	}
	<-u.seen // the first query
	select {
	case <-u.seen:
	case <-time.After(5 * time.Second):
		t.Fatal("no prefetch within 5 s")
	}
}
