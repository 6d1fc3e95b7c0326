package dnssplit

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
	"golang.org/x/time/rate"
)

// RateLimit limits UDP responses per client prefix (response rate limiting):
// a flood with spoofed sources cannot use the server to amplify, and one
// client cannot take all its work. TCP is never limited: it cannot be spoofed.
//
// A Server with a nil RateLimit uses the defaults below, with the Networks
// of its recursive views exempt (they are the server's own clients).
type RateLimit struct {
	// Disabled turns response rate limiting off.
	Disabled bool

	// PerSecond optionally sets the responses per second each prefix gets;
	// if zero or less, 50 is used.
	PerSecond float64

	// Burst optionally sets how many responses a quiet prefix may get at
	// once; if zero or less, twice PerSecond (at least 1) is used.
	Burst int

	// Slip optionally makes every Slip-th limited query get an empty
	// truncated reply, so a real client behind a spoofed flood retries over
	// TCP; if zero, 2 is used (as in BIND); negative never slips.
	Slip int

	// IPv4Prefix and IPv6Prefix optionally set the length of the prefix
	// clients are grouped by; if zero, /24 and /56.
	IPv4Prefix, IPv6Prefix int

	// MaxPrefixes optionally bounds the prefixes tracked at once (memory
	// under a flood of spoofed sources); if zero, 100 000. A prefix quiet
	// for long enough is forgotten in O(1) and starts again with a full
	// burst, as it would have had anyway.
	MaxPrefixes int

	// Exempt lists networks that are never limited (the LAN, say).
	Exempt []netip.Prefix
}

type limitVerdict int

const (
	limitAllow limitVerdict = iota
	limitDrop
	limitSlip
)

const (
	// defaultRatePerSecond and defaultRateBurst are the zero-value limit:
	// 50 answers per second per /24 is more than a whole office of stub
	// resolvers asks of one authoritative server, and well below what turns
	// a server into a useful amplifier; the burst covers a page load.
	defaultRatePerSecond = 50
	defaultRateBurst     = 100
	// defaultMaxPrefixes bounds the limiter's memory under a flood of
	// random sources: 100k buckets of ~100 bytes, about 10 MB.
	defaultMaxPrefixes = 100000
)

// limiter applies a RateLimit. Buckets live in a netcore.KeyedLimiter, whose
// two generations forget idle prefixes in O(1) per new prefix: a flood of
// spoofed sources (with IPv4Prefix 32, one prefix per packet) costs a map
// insert each, never a sweep of the table.
type limiter struct {
	cfg      RateLimit
	bits4    int
	bits6    int
	slip     int
	exempt   func(netip.Addr) bool // in addition to cfg.Exempt; may be nil
	buckets  netcore.KeyedLimiter[netip.Prefix]
	limited  atomic.Uint64 // limited queries, for Slip
	refusals *refusals     // counts limited queries for the Warn summary; may be nil
	now      func() time.Time
}

// newLimiter returns the server's limiter, or nil if rate limiting is off.
func (s *Server) newLimiter() *limiter {
	var cfg RateLimit
	var exempt func(netip.Addr) bool
	if s.RateLimit != nil {
		cfg = *s.RateLimit
	} else {
		exempt = s.inRecursiveNetworks
	}
	if cfg.Disabled {
		return nil
	}
	l := newLimiter(cfg, exempt)
	l.refusals = &s.stats.refusals
	return l
}

// inRecursiveNetworks reports whether a is in the Networks of a view with
// Recursion (the views in use now, so SetViews is followed).
func (s *Server) inRecursiveNetworks(a netip.Addr) bool {
	for _, v := range s.views() {
		if v.Recursion && containsAddr(v.Networks, a) {
			return true
		}
	}
	return false
}

func newLimiter(cfg RateLimit, exempt func(netip.Addr) bool) *limiter {
	if cfg.PerSecond <= 0 {
		cfg.PerSecond = defaultRatePerSecond
		if cfg.Burst <= 0 {
			cfg.Burst = defaultRateBurst
		}
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(int(2*cfg.PerSecond), 1)
	}
	l := &limiter{cfg: cfg, exempt: exempt, now: time.Now, slip: cfg.Slip, bits4: cfg.IPv4Prefix, bits6: cfg.IPv6Prefix}
	if l.slip == 0 {
		l.slip = 2
	}
	if l.bits4 <= 0 || l.bits4 > 32 {
		l.bits4 = 24
	}
	if l.bits6 <= 0 || l.bits6 > 128 {
		l.bits6 = 56
	}
	l.buckets.Rate = rate.Limit(cfg.PerSecond)
	l.buckets.Burst = cfg.Burst
	l.buckets.Max = cfg.MaxPrefixes
	if l.buckets.Max <= 0 {
		l.buckets.Max = defaultMaxPrefixes
	}
	l.buckets.Now = func() time.Time { return l.now() }
	return l
}

func (l *limiter) prefixOf(a netip.Addr) netip.Prefix {
	return netcore.Network(a, l.bits4, l.bits6)
}

func (l *limiter) allow(a netip.Addr) limitVerdict {
	if containsAddr(l.cfg.Exempt, a) || l.exempt != nil && l.exempt(a) {
		return limitAllow
	}
	if l.buckets.Allow(l.prefixOf(a)) {
		return limitAllow
	}
	if l.refusals != nil {
		l.refusals.note(refusedRate)
	}
	n := l.limited.Add(1)
	if l.slip > 0 && n%uint64(l.slip) == 0 {
		return limitSlip
	}
	return limitDrop
}
