package netcore

import (
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestKeyedLimiterBucket(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	k := &KeyedLimiter[string]{Rate: 10, Burst: 3, Now: clk.now}
	for i, want := range []bool{true, true, true, false, false} {
		if got := k.Allow("a"); got != want {
			t.Fatalf("take %d: Allow = %v, want %v", i, got, want)
		}
	}
	if !k.Allow("b") {
		t.Fatal("another key shares a's bucket")
	}
	clk.t = clk.t.Add(100 * time.Millisecond) // one token at 10/s
	if !k.Allow("a") || k.Allow("a") {
		t.Fatal("refill after 100 ms at 10/s is not exactly one token")
	}
	clk.t = clk.t.Add(time.Hour)
	if got := k.Tokens("a"); got != 3 {
		t.Fatalf("tokens after an hour = %v, want the burst 3", got)
	}
}

func TestKeyedLimiterZeroAllows(t *testing.T) {
	var k KeyedLimiter[int]
	for i := range 10000 {
		if !k.Allow(i % 3) {
			t.Fatal("zero KeyedLimiter refused")
		}
	}
	if k.Len() != 0 {
		t.Fatalf("zero limiter tracks %d keys", k.Len())
	}
}

// A flood of new keys stays within Max, costs O(1) per key (no sweep), and a
// key that keeps coming back keeps its (empty) bucket across generations.
func TestKeyedLimiterBoundedUnderFlood(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	k := &KeyedLimiter[netip.Addr]{Rate: 1, Burst: 2, Max: 1000, Now: clk.now}
	victim := netip.MustParseAddr("198.51.100.1")
	k.Allow(victim)
	k.Allow(victim) // empty now
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range 100_000 {
		a := base
		a[1], a[2], a[3] = byte(i>>16), byte(i>>8), byte(i)
		k.Allow(netip.AddrFrom4(a))
		if i%100 == 0 && k.Allow(victim) {
			t.Fatalf("after %d flood keys the victim's empty bucket was refilled", i)
		}
		if k.Len() > 1000 {
			t.Fatalf("tracking %d keys, Max 1000", k.Len())
		}
	}
	if k.Dropped() == 0 {
		t.Fatal("no key was dropped by a flood 100x Max")
	}
}

func BenchmarkKeyedLimiterFlood(b *testing.B) {
	k := &KeyedLimiter[uint32]{Rate: 50, Burst: 100, Max: 100_000}
	for i := range b.N {
		k.Allow(uint32(i))
	}
}
