package relay

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// budget is a per-source-address token bucket for replies that cost the
// relay more than the request (401 challenges): no reflection amplifier.
// It keeps at most maxSources entries; when full it forgets everyone, which
// errs on the side of answering.
type budget struct {
	rate, burst float64

	mu      sync.Mutex
	sources map[netip.Addr]*tokens
}

type tokens struct {
	n    float64
	last time.Time
}

// maxSources bounds the memory of the 401 budget (~64 B an entry).
const maxSources = 65536

func (b *budget) allow(src netip.Addr, now time.Time) bool {
	if b.rate == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sources == nil || len(b.sources) >= maxSources {
		b.sources = make(map[netip.Addr]*tokens)
	}
	t := b.sources[src]
	if t == nil {
		t = &tokens{n: b.burst, last: now}
		b.sources[src] = t
	}
	t.n = math.Min(b.burst, t.n+now.Sub(t.last).Seconds()*b.rate)
	t.last = now
	if t.n < 1 {
		return false
	}
	t.n--
	return true
}
