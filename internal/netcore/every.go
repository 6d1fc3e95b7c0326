package netcore

import (
	"sync/atomic"
	"time"
)

// Every lets an event through at most once per interval, from whichever
// goroutine finds the interval over, without a goroutine of its own: the
// gate of log lines any remote host can trigger. The zero value lets the
// first event through.
type Every struct {
	last atomic.Int64 // unix nanoseconds of the last event let through; 0: none yet
}

// Allow reports whether an event at now may pass, interval after the last
// one that did, and returns when that was (the zero Time for the first).
func (e *Every) Allow(now time.Time, interval time.Duration) (prev time.Time, ok bool) {
	last := e.last.Load()
	if last != 0 && now.UnixNano()-last < int64(interval) {
		return time.Time{}, false
	}
	if !e.last.CompareAndSwap(last, now.UnixNano()) {
		return time.Time{}, false // another goroutine took this one
	}
	if last != 0 {
		prev = time.Unix(0, last)
	}
	return prev, true
}
