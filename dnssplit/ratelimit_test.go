package dnssplit

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// answered asks s n times from src over UDP (the Resolve path) and counts
// full answers, truncated slips and drops.
func answered(t *testing.T, s *Server, src string, n int) (full, slipped, dropped int) {
	t.Helper()
	c := Client{Source: netip.MustParseAddr(src)}
	for range n {
		r := s.Resolve(t.Context(), q("blog.example.com.", dns.TypeA), c, false)
		switch {
		case r == nil:
			dropped++
		case r.Truncated:
			slipped++
		default:
			full++
		}
	}
	return
}

// TestRateLimitDefaultOn: a Server with a nil RateLimit limits UDP answers
// to outside clients (burst 100, then every second limited query slips),
// exempts the networks of its recursive views, and Disabled turns it off.
// (Before: a nil RateLimit meant no limit at all.)
func TestRateLimitDefaultOn(t *testing.T) {
	frozen := time.Now()
	for _, tc := range []struct {
		name                   string
		rl                     *RateLimit
		src                    string
		full, slipped, dropped int
	}{
		{"default outside", nil, "198.51.100.7", 100, 50, 50},
		{"default recursive view exempt", nil, "127.0.0.2", 200, 0, 0},
		{"disabled", &RateLimit{Disabled: true}, "198.51.100.7", 200, 0, 0},
		{"explicit", &RateLimit{PerSecond: 10, Slip: -1}, "198.51.100.7", 20, 0, 180},
		{"explicit exempt", &RateLimit{PerSecond: 10, Exempt: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}, "198.51.100.7", 200, 0, 0},
		{"explicit does not exempt recursive views", &RateLimit{PerSecond: 10, Burst: 10, Slip: -1}, "127.0.0.2", 10, 0, 190},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := splitServer(t)
			s.RateLimit = tc.rl
			s.init()
			defer s.Close()
			if s.limiter != nil {
				s.limiter.now = func() time.Time { return frozen }
			}
			full, slipped, dropped := answered(t, s, tc.src, 200)
			if full != tc.full || slipped != tc.slipped || dropped != tc.dropped {
				t.Fatalf("200 queries: %d full, %d slipped, %d dropped; want %d, %d, %d",
					full, slipped, dropped, tc.full, tc.slipped, tc.dropped)
			}
			if got, want := s.Stats().RateLimited, uint64(tc.slipped+tc.dropped); got != want {
				t.Errorf("RateLimited = %d, want %d", got, want)
			}
		})
	}
}

// TestRateLimitBuckets: prefixes group clients, refill follows the clock.
func TestRateLimitBuckets(t *testing.T) {
	now := time.Now()
	l := newLimiter(RateLimit{PerSecond: 2, Burst: 2, Slip: -1}, nil)
	l.now = func() time.Time { return now }
	steps := []struct {
		advance time.Duration
		src     string
		want    limitVerdict
	}{
		{0, "192.0.2.1", limitAllow},
		{0, "192.0.2.2", limitAllow}, // same /24: one bucket
		{0, "192.0.2.3", limitDrop},
		{0, "192.0.3.1", limitAllow}, // another /24
		{500 * time.Millisecond, "192.0.2.1", limitAllow},
		{0, "192.0.2.1", limitDrop},
		{time.Second, "192.0.2.1", limitAllow},
		{0, "192.0.2.1", limitAllow},
		{0, "192.0.2.1", limitDrop},
		{0, "2001:db8:0:1::1", limitAllow},
		{0, "2001:db8:0:2::1", limitAllow}, // same /56
		{0, "2001:db8:0:3::1", limitDrop},
		{0, "2001:db8:1::1", limitAllow},    // another /56
		{0, "::ffff:192.0.3.9", limitAllow}, // mapped: the IPv4 bucket of 192.0.3.0/24
		{0, "192.0.3.9", limitAllow},
		{0, "192.0.3.10", limitDrop},
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		if got := l.allow(netip.MustParseAddr(st.src)); got != st.want {
			t.Fatalf("step %d (%s after +%v): verdict %d, want %d", i, st.src, st.advance, got, st.want)
		}
	}
}

// TestRateLimitSlip: every Slip-th limited query slips.
func TestRateLimitSlip(t *testing.T) {
	for _, tc := range []struct{ slip, wantSlips int }{{0, 5}, {1, 10}, {3, 3}, {-1, 0}} {
		t.Run(fmt.Sprint(tc.slip), func(t *testing.T) {
			now := time.Now()
			l := newLimiter(RateLimit{PerSecond: 1, Burst: 1, Slip: tc.slip}, nil)
			l.now = func() time.Time { return now }
			l.allow(netip.MustParseAddr("192.0.2.1"))
			slips := 0
			for range 10 {
				if l.allow(netip.MustParseAddr("192.0.2.1")) == limitSlip {
					slips++
				}
			}
			if slips != tc.wantSlips {
				t.Fatalf("%d slips in 10 limited queries, want %d", slips, tc.wantSlips)
			}
		})
	}
}

// TestRateLimitSpoofedFlood is issue 11 item 14: with IPv4Prefix 32, a flood
// of distinct spoofed sources (one new prefix per packet) past the table's
// bound neither grows memory nor locks newcomers out. (Before: once the table
// was full, every new source swept the whole table, and when nothing was
// idle all newcomers shared one bucket, so a legitimate new client was
// limited by the flood.)
func TestRateLimitSpoofedFlood(t *testing.T) {
	now := time.Now()
	const maxPrefixes = 10000
	l := newLimiter(RateLimit{PerSecond: 5, Burst: 5, IPv4Prefix: 32, MaxPrefixes: maxPrefixes, Slip: -1}, nil)
	l.now = func() time.Time { return now } // nothing ever becomes idle
	victim := netip.MustParseAddr("203.0.113.9")
	victimAllowed := 0
	for i := range 20 * maxPrefixes {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if got := l.allow(a); got != limitAllow {
			t.Fatalf("spoofed source %d (%s), first packet: verdict %d, want allowed", i, a, got)
		}
		if i%100 == 0 && l.allow(victim) == limitAllow { // a reflection target keeps its bucket
			victimAllowed++
		}
	}
	if n := l.buckets.Len(); n > maxPrefixes {
		t.Fatalf("%d prefixes tracked, bound %d", n, maxPrefixes)
	}
	if victimAllowed != 5 {
		t.Fatalf("the spoofed victim's prefix got %d answers during the flood, want its burst of 5", victimAllowed)
	}
	if got := l.allow(netip.MustParseAddr("198.51.100.1")); got != limitAllow {
		t.Fatalf("a new legitimate client during the flood: verdict %d, want allowed", got)
	}
}

// BenchmarkRateLimitSpoofedFlood: cost per query of a flood of distinct /32
// sources once the table is full (the case that swept 100k buckets per new
// source before).
func BenchmarkRateLimitSpoofedFlood(b *testing.B) {
	now := time.Now()
	l := newLimiter(RateLimit{PerSecond: 5, Burst: 5, IPv4Prefix: 32}, nil)
	l.now = func() time.Time { return now }
	for i := range defaultMaxPrefixes {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i + defaultMaxPrefixes
		l.allow(netip.AddrFrom4([4]byte{11, byte(j >> 16), byte(j >> 8), byte(j)}))
	}
}
