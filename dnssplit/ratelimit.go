package dnssplit

import (
	"net/netip"
	"sync"
	"time"
)

// RateLimit limits UDP responses per client prefix (response rate limiting):
// a flood with spoofed sources cannot use the server to amplify, and one
// client cannot take all its work. TCP is never limited: it cannot be spoofed.
type RateLimit struct {
	// PerSecond is the number of responses per second each prefix gets.
	PerSecond float64

	// Burst optionally sets how many responses a quiet prefix may get at
	// once; if zero, PerSecond (at least 1) is used.
	Burst int

	// Slip optionally makes every Slip-th limited query get an empty
	// truncated reply, so a real client behind a spoofed flood retries over
	// TCP; if zero, 2 is used (as in BIND); negative never slips.
	Slip int

	// IPv4Prefix and IPv6Prefix optionally set the length of the prefix
	// clients are grouped by; if zero, /24 and /56.
	IPv4Prefix, IPv6Prefix int

	// Exempt lists networks that are never limited (the LAN, say).
	Exempt []netip.Prefix
}

type limitVerdict int

const (
	limitAllow limitVerdict = iota
	limitDrop
	limitSlip
)

// maxBuckets bounds the limiter's memory under a flood of random sources;
// at the bound, idle buckets are swept and, failing that, new ones share one.
const maxBuckets = 100000

type bucket struct {
	tokens  float64
	last    time.Time
	limited int
}

type limiter struct {
	cfg     RateLimit
	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
	now     func() time.Time
}

func newLimiter(cfg RateLimit) *limiter {
	return &limiter{cfg: cfg, buckets: make(map[netip.Prefix]*bucket), now: time.Now}
}

func (l *limiter) burst() float64 {
	if l.cfg.Burst > 0 {
		return float64(l.cfg.Burst)
	}
	return max(l.cfg.PerSecond, 1)
}

func (l *limiter) prefixOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := l.cfg.IPv6Prefix
	if bits <= 0 || bits > 128 {
		bits = 56
	}
	if a.Is4() {
		bits = l.cfg.IPv4Prefix
		if bits <= 0 || bits > 32 {
			bits = 24
		}
	}
	p, _ := a.Prefix(bits)
	return p
}

func (l *limiter) allow(a netip.Addr) limitVerdict {
	if l.cfg.PerSecond <= 0 || containsAddr(l.cfg.Exempt, a) {
		return limitAllow
	}
	p := l.prefixOf(a)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[p]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.sweepLocked(now)
		}
		if len(l.buckets) >= maxBuckets {
			p = netip.Prefix{} // everyone new shares one bucket until the sweep frees room
			b = l.buckets[p]
		}
		if b == nil {
			b = &bucket{tokens: l.burst(), last: now}
			l.buckets[p] = b
		}
	}
	b.tokens = min(l.burst(), b.tokens+now.Sub(b.last).Seconds()*l.cfg.PerSecond)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return limitAllow
	}
	b.limited++
	slip := l.cfg.Slip
	if slip == 0 {
		slip = 2
	}
	if slip > 0 && b.limited%slip == 0 {
		return limitSlip
	}
	return limitDrop
}

func (l *limiter) sweepLocked(now time.Time) {
	idle := time.Duration(l.burst()/l.cfg.PerSecond*float64(time.Second)) + time.Second
	for p, b := range l.buckets {
		if now.Sub(b.last) > idle {
			delete(l.buckets, p)
		}
	}
}
