package nat

import (
	"net/netip"
	"sync"
	"time"
)

// maxTracked bounds the sources the limiter remembers in one window, so a
// flood of spoofed sources costs bounded memory. Past it, new sources are
// refused until the window ends.
const maxTracked = 1 << 16

// limiter counts requests per source IP in fixed one-second windows.
type limiter struct {
	mu     sync.Mutex
	window time.Time
	counts map[netip.Addr]int
}

// allow reports whether one more request from a may be answered at now.
// A negative limit allows everything.
func (l *limiter) allow(a netip.Addr, limit int, now time.Time) bool {
	if limit < 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil || now.Sub(l.window) >= time.Second || now.Before(l.window) {
		if l.counts == nil || len(l.counts) > 1024 {
			l.counts = make(map[netip.Addr]int)
		} else {
			clear(l.counts)
		}
		l.window = now
	}
	n, ok := l.counts[a]
	if !ok && len(l.counts) >= maxTracked {
		return false
	}
	if n >= limit {
		return false
	}
	l.counts[a] = n + 1
	return true
}
