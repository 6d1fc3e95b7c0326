package dnssplit

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// msg builds an answer from zone-file lines: "an:" lines go to the answer
// section, "ns:" to the authority, "ad:" to the additional.
func msg(t *testing.T, rcode int, lines ...string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.Response = true
	m.Rcode = rcode
	for _, l := range lines {
		sec, text, _ := strings.Cut(l, ":")
		rr, err := dns.NewRR(text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		switch sec {
		case "an":
			m.Answer = append(m.Answer, rr)
		case "ns":
			m.Ns = append(m.Ns, rr)
		case "ad":
			m.Extra = append(m.Extra, rr)
		default:
			t.Fatalf("section %q", sec)
		}
	}
	return m
}

func TestCacheTTL(t *testing.T) {
	for _, c := range []struct {
		name     string
		cfg      CacheConfig
		m        func(t *testing.T) *dns.Msg
		ttl      time.Duration
		positive bool
	}{
		{"positive: the smallest TTL", CacheConfig{}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeSuccess, "an:a.test. 300 IN CNAME b.test.", "an:b.test. 60 IN A 192.0.2.1")
		}, 60 * time.Second, true},
		{"positive: MinTTL floor", CacheConfig{MinTTL: 30 * time.Second}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeSuccess, "an:a.test. 5 IN A 192.0.2.1")
		}, 30 * time.Second, true},
		{"positive: MaxTTL cap", CacheConfig{MaxTTL: time.Hour}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeSuccess, "an:a.test. 2147483647 IN A 192.0.2.1")
		}, time.Hour, true},
		{"NXDOMAIN: min(SOA TTL, MINIMUM)", CacheConfig{}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeNameError, "ns:test. 900 IN SOA ns.test. h.test. 1 2 3 4 120")
		}, 120 * time.Second, false},
		{"NODATA: the SOA TTL when lower", CacheConfig{}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeSuccess, "ns:test. 45 IN SOA ns.test. h.test. 1 2 3 4 120")
		}, 45 * time.Second, false},
		{"negative: NegativeTTL cap", CacheConfig{NegativeTTL: 10 * time.Second}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeNameError, "ns:test. 900 IN SOA ns.test. h.test. 1 2 3 4 900")
		}, 10 * time.Second, false},
		{"negative without SOA: not cached", CacheConfig{}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeNameError)
		}, 0, false},
		{"SERVFAIL: not cached", CacheConfig{}, func(t *testing.T) *dns.Msg {
			return msg(t, dns.RcodeServerFailure, "ns:test. 900 IN SOA ns.test. h.test. 1 2 3 4 900")
		}, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ttl, positive := newCache(c.cfg).ttlOf(c.m(t))
			if ttl != c.ttl || positive != c.positive {
				t.Errorf("ttlOf = %v, %v; want %v, %v", ttl, positive, c.ttl, c.positive)
			}
		})
	}
}

// TestCacheEviction: the entry bound holds; an entry past its stale window
// goes first, else the one closest to its end; replacing a key takes no
// room; Disabled stores nothing.
func TestCacheEviction(t *testing.T) {
	now := time.Unix(1e9, 0)
	key := func(n string) cacheKey { return cacheKey{View: "v", Name: n, Type: dns.TypeA, Class: dns.ClassINET} }
	answer := func(t *testing.T, name string, ttl int) *dns.Msg {
		return msg(t, dns.RcodeSuccess, fmt.Sprintf("an:%s %d IN A 192.0.2.1", name, ttl))
	}
	type step struct {
		advance time.Duration
		put     string
		ttl     int
	}
	for _, c := range []struct {
		name  string
		cfg   CacheConfig
		steps []step
		want  []string // keys left, in any order
	}{
		{"bound: the one closest to its end goes",
			CacheConfig{MaxEntries: 3, StaleFor: -1},
			[]step{{put: "a.", ttl: 300}, {put: "b.", ttl: 30}, {put: "c.", ttl: 600}, {put: "d.", ttl: 100}},
			[]string{"a.", "c.", "d."}},
		{"expired past the stale window goes first",
			CacheConfig{MaxEntries: 3, StaleFor: time.Minute},
			[]step{{put: "a.", ttl: 10}, {put: "b.", ttl: 200}, {put: "c.", ttl: 5000}, {advance: 2 * time.Minute, put: "d.", ttl: 3000}},
			[]string{"b.", "c.", "d."}},
		{"stale but within the window counts by its end",
			CacheConfig{MaxEntries: 2, StaleFor: time.Hour},
			[]step{{put: "a.", ttl: 10}, {put: "b.", ttl: 7200}, {advance: time.Minute, put: "c.", ttl: 7200}},
			[]string{"b.", "c."}},
		{"replacing a key takes no room",
			CacheConfig{MaxEntries: 2},
			[]step{{put: "a.", ttl: 10}, {put: "b.", ttl: 20}, {put: "a.", ttl: 30}, {put: "a.", ttl: 40}},
			[]string{"a.", "b."}},
		{"disabled stores nothing",
			CacheConfig{Disabled: true},
			[]step{{put: "a.", ttl: 10}},
			nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := now
			ca := newCache(c.cfg)
			ca.setClock(func() time.Time { return clock })
			for _, s := range c.steps {
				clock = clock.Add(s.advance)
				ca.put(key(s.put), answer(t, s.put, s.ttl))
			}
			var left []string
			for k := range ca.entries {
				left = append(left, k.Name)
			}
			if got, want := strings.Join(sorted(left), " "), strings.Join(sorted(c.want), " "); got != want {
				t.Errorf("left %q, want %q", got, want)
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestCacheGet: fresh answers age their TTLs, stale ones (within StaleFor)
// carry TTL 30 (RFC 8767), and past the window the entry is gone.
func TestCacheGet(t *testing.T) {
	clock := time.Unix(1e9, 0)
	ca := newCache(CacheConfig{StaleFor: time.Minute})
	ca.setClock(func() time.Time { return clock })
	k := cacheKey{View: "v", Name: "a.test.", Type: dns.TypeA, Class: dns.ClassINET}
	ca.put(k, msg(t, dns.RcodeSuccess, "an:a.test. 100 IN A 192.0.2.1"))
	for _, c := range []struct {
		at    time.Duration
		state cacheState
		ttl   uint32
	}{
		{0, cacheFresh, 100},
		{40 * time.Second, cacheFresh, 60},
		{100 * time.Second, cacheStale, staleTTL},
		{159 * time.Second, cacheStale, staleTTL},
		{161 * time.Second, cacheMiss, 0},
		{0, cacheMiss, 0}, // deleted at the miss above, not resurrected
	} {
		if c.at != 0 {
			clock = time.Unix(1e9, 0).Add(c.at)
		}
		got := ca.get(k)
		m, st := got.msg, got.state
		if st != c.state {
			t.Fatalf("at %v: state %v, want %v", c.at, st, c.state)
		}
		if m != nil && m.Answer[0].Header().Ttl != c.ttl {
			t.Errorf("at %v: TTL %d, want %d", c.at, m.Answer[0].Header().Ttl, c.ttl)
		}
	}
	if ca.len() != 0 {
		t.Errorf("%d entries after the stale window", ca.len())
	}
}

// TestValidateTable: each rule of the upstream-answer check.
func TestValidateTable(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("a.example.net.", dns.TypeA)
	reply := func(mod func(*dns.Msg)) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		mod(r)
		return r
	}
	for _, c := range []struct {
		name string
		r    *dns.Msg
		want error // nil, errBadAnswer or errUpstreamRcode
	}{
		{"answer", reply(func(*dns.Msg) {}), nil},
		{"NXDOMAIN is an answer", reply(func(r *dns.Msg) { r.Rcode = dns.RcodeNameError }), nil},
		{"question in another case", reply(func(r *dns.Msg) { r.Question[0].Name = "A.Example.NET." }), nil},
		{"wrong ID", reply(func(r *dns.Msg) { r.Id++ }), errBadAnswer},
		{"not a response", reply(func(r *dns.Msg) { r.Response = false }), errBadAnswer},
		{"other name", reply(func(r *dns.Msg) { r.Question[0].Name = "b.example.net." }), errBadAnswer},
		{"other type", reply(func(r *dns.Msg) { r.Question[0].Qtype = dns.TypeAAAA }), errBadAnswer},
		{"other class", reply(func(r *dns.Msg) { r.Question[0].Qclass = dns.ClassCHAOS }), errBadAnswer},
		{"no question", reply(func(r *dns.Msg) { r.Question = nil }), errBadAnswer},
		{"two questions", reply(func(r *dns.Msg) { r.Question = append(r.Question, r.Question[0]) }), errBadAnswer},
		{"SERVFAIL: the next upstream, no health penalty", reply(func(r *dns.Msg) { r.Rcode = dns.RcodeServerFailure }), errUpstreamRcode},
		{"REFUSED likewise", reply(func(r *dns.Msg) { r.Rcode = dns.RcodeRefused }), errUpstreamRcode},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := validate(q, c.r)
			if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
				t.Errorf("validate: %v, want %v", err, c.want)
			}
		})
	}
}

// TestScrubTable: each rule of scrub, on a hostile or sloppy upstream's
// answer to a.example.net A.
func TestScrubTable(t *testing.T) {
	q := dns.Question{Name: "a.example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
	soa := "example.net. 300 IN SOA ns.example.net. h.example.net. 1 2 3 4 60"
	for _, c := range []struct {
		name    string
		in      *dns.Msg
		do      bool
		want    []string // answer + authority left, as text
		dropped int
		bad     bool
	}{
		{"plain answer", msg(t, 0, "an:a.example.net. 60 IN A 192.0.2.1"), false,
			[]string{"a.example.net.\t60\tIN\tA\t192.0.2.1"}, 0, false},
		{"additional and authority of a positive answer dropped",
			msg(t, 0, "an:a.example.net. 60 IN A 192.0.2.1", "ns:example.net. 60 IN NS ns.evil.test.", "ad:ns.evil.test. 60 IN A 6.6.6.6"), false,
			[]string{"a.example.net.\t60\tIN\tA\t192.0.2.1"}, 2, false},
		{"records for other names dropped",
			msg(t, 0, "an:a.example.net. 60 IN A 192.0.2.1", "an:blog.example.com. 60 IN A 6.6.6.6"), false,
			[]string{"a.example.net.\t60\tIN\tA\t192.0.2.1"}, 1, false},
		{"other types at the name dropped",
			msg(t, 0, "an:a.example.net. 60 IN A 192.0.2.1", "an:a.example.net. 60 IN TXT \"x\""), false,
			[]string{"a.example.net.\t60\tIN\tA\t192.0.2.1"}, 1, false},
		{"CNAME chain kept",
			msg(t, 0, "an:a.example.net. 60 IN CNAME b.example.org.", "an:b.example.org. 60 IN A 192.0.2.2"), false,
			[]string{"a.example.net.\t60\tIN\tCNAME\tb.example.org.", "b.example.org.\t60\tIN\tA\t192.0.2.2"}, 0, false},
		{"second CNAME at a name dropped",
			msg(t, 0, "an:a.example.net. 60 IN CNAME b.example.org.", "an:a.example.net. 60 IN CNAME evil.test.", "an:b.example.org. 60 IN A 192.0.2.2", "an:evil.test. 60 IN A 6.6.6.6"), false,
			[]string{"a.example.net.\t60\tIN\tCNAME\tb.example.org.", "b.example.org.\t60\tIN\tA\t192.0.2.2"}, 2, false},
		{"DNAME of an ancestor kept (RFC 6672)",
			msg(t, 0, "an:example.net. 60 IN DNAME example.org.", "an:a.example.net. 60 IN CNAME a.example.org.", "an:a.example.org. 60 IN A 192.0.2.3"), false,
			[]string{"example.net.\t60\tIN\tDNAME\texample.org.", "a.example.net.\t60\tIN\tCNAME\ta.example.org.", "a.example.org.\t60\tIN\tA\t192.0.2.3"}, 0, false},
		{"DNAME of an unrelated name dropped",
			msg(t, 0, "an:evil.test. 60 IN DNAME example.org.", "an:a.example.net. 60 IN A 192.0.2.1"), false,
			[]string{"a.example.net.\t60\tIN\tA\t192.0.2.1"}, 1, false},
		{"TTL capped", msg(t, 0, "an:a.example.net. 2147483647 IN A 192.0.2.1"), false,
			[]string{"a.example.net.\t86400\tIN\tA\t192.0.2.1"}, 0, false},
		{"negative: the SOA of an enclosing zone kept",
			msg(t, dns.RcodeNameError, "ns:"+soa, "ns:example.net. 60 IN NS ns.example.net."), false,
			[]string{"example.net.\t300\tIN\tSOA\tns.example.net. h.example.net. 1 2 3 4 60"}, 1, false},
		{"negative: an unrelated zone's SOA dropped",
			msg(t, dns.RcodeNameError, "ns:evil.test. 300 IN SOA ns.evil.test. h.evil.test. 1 2 3 4 60"), false,
			nil, 1, false},
		{"RRSIG kept only with DO",
			msg(t, 0, "an:a.example.net. 60 IN A 192.0.2.1", "an:a.example.net. 60 IN RRSIG A 8 3 60 20300101000000 20200101000000 1 example.net. AAAA"), false,
			[]string{"a.example.net.\t60\tIN\tA\t192.0.2.1"}, 1, false},
		{"nothing for the question: not an answer",
			msg(t, 0, "an:blog.example.com. 60 IN A 6.6.6.6"), false, nil, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, dropped, err := scrub(q, c.in, c.do, 24*time.Hour)
			if c.bad {
				if !errors.Is(err, errBadAnswer) {
					t.Fatalf("scrub: %v, want errBadAnswer", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, rr := range append(append([]dns.RR(nil), out.Answer...), out.Ns...) {
				got = append(got, rr.String())
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") || dropped != c.dropped || len(out.Extra) != 0 {
				t.Errorf("kept\n%s\ndropped %d, extra %d; want\n%s\ndropped %d", strings.Join(got, "\n"), dropped, len(out.Extra), strings.Join(c.want, "\n"), c.dropped)
			}
		})
	}
}
