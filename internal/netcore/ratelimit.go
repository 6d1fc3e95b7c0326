package netcore

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the keys a KeyedLimiter tracks when Max is zero: 64k
// buckets of about 100 bytes each, a few MB, enough for every source of a busy
// home or small-office server.
const DefaultMaxKeys = 1 << 16

// KeyedLimiter is a token bucket per key (a source address, a network, a
// user name), built on golang.org/x/time/rate. It is safe for concurrent use.
// The zero value allows everything (Rate zero means no limit).
//
// Memory is bounded by Max keys in two generations: when the current
// generation reaches Max/2 keys, it becomes the old one and the old one is
// dropped. A key seen again moves to the current generation with its bucket.
// So each Allow costs O(1) even under a flood of spoofed sources, and a key
// that is dropped is one idle for a whole generation: its bucket would be
// nearly full again anyway, and it starts full.
type KeyedLimiter[K comparable] struct {
	// Rate is the refill rate in events per second; zero or less: no limit.
	Rate rate.Limit
	// Burst is the bucket size; zero or less means 1.
	Burst int
	// Max bounds the tracked keys; zero means DefaultMaxKeys.
	Max int
	// Now is the clock; nil means time.Now. Tests move it instead of sleeping.
	Now func() time.Time

	mu       sync.Mutex
	cur, old map[K]*rate.Limiter
	dropped  uint64
}

func (k *KeyedLimiter[K]) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func (k *KeyedLimiter[K]) max() int {
	if k.Max > 0 {
		return max(k.Max, 2)
	}
	return DefaultMaxKeys
}

func (k *KeyedLimiter[K]) burst() int { return max(k.Burst, 1) }

func (k *KeyedLimiter[K]) bucket(key K) *rate.Limiter {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l, ok := k.cur[key]; ok {
		return l
	}
	if k.cur == nil {
		k.cur = make(map[K]*rate.Limiter)
	}
	l, ok := k.old[key]
	if ok {
		delete(k.old, key)
	} else {
		l = rate.NewLimiter(k.Rate, k.burst())
	}
	if len(k.cur) >= k.max()/2 {
		k.dropped += uint64(len(k.old))
		k.old, k.cur = k.cur, make(map[K]*rate.Limiter, len(k.cur))
	}
	k.cur[key] = l
	return l
}

// Allow takes one token from key's bucket and reports whether there was one.
func (k *KeyedLimiter[K]) Allow(key K) bool { return k.AllowN(key, 1) }

// AllowN takes n tokens from key's bucket and reports whether there were n.
func (k *KeyedLimiter[K]) AllowN(key K, n int) bool {
	if k.Rate <= 0 {
		return true
	}
	return k.bucket(key).AllowN(k.now(), n)
}

// Tokens returns the tokens left in key's bucket now, without taking any and
// without tracking key if it is new.
func (k *KeyedLimiter[K]) Tokens(key K) float64 {
	if k.Rate <= 0 {
		return float64(k.burst())
	}
	k.mu.Lock()
	l, ok := k.cur[key]
	if !ok {
		l, ok = k.old[key]
	}
	k.mu.Unlock()
	if !ok {
		return float64(k.burst())
	}
	return l.TokensAt(k.now())
}

// Len returns the number of keys tracked now.
func (k *KeyedLimiter[K]) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.cur) + len(k.old)
}

// Dropped returns how many idle keys were forgotten to keep within Max.
func (k *KeyedLimiter[K]) Dropped() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dropped
}
