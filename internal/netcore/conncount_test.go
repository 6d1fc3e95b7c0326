package netcore

import (
	"net/netip"
	"sync"
	"testing"
)

func TestConnCounter(t *testing.T) {
	c := &ConnCounter{PerAddr: 2, PerNet: 3}
	a1 := netip.MustParseAddr("192.0.2.1")
	a1m := netip.MustParseAddr("::ffff:192.0.2.1")
	a2 := netip.MustParseAddr("192.0.2.2")
	a3 := netip.MustParseAddr("192.0.2.3")
	other := netip.MustParseAddr("198.51.100.1")
	steps := []struct {
		addr netip.Addr
		want Verdict
	}{
		{a1, Allowed}, {a1m, Allowed}, {a1, OverAddr}, // mapped is the same source
		{a2, Allowed}, {a3, OverNet}, {other, Allowed},
	}
	for i, s := range steps {
		if got := c.Acquire(s.addr); got != s.want {
			t.Fatalf("step %d: Acquire(%s) = %v, want %v", i, s.addr, got, s.want)
		}
	}
	if n := c.Total(); n != 4 {
		t.Fatalf("Total = %d, want 4", n)
	}
	c.Release(a1m)
	if got := c.Acquire(a3); got != Allowed {
		t.Fatalf("after a release, Acquire(%s) = %v, want allowed", a3, got)
	}
	for _, a := range []netip.Addr{a1, a2, a3, other} {
		c.Release(a)
	}
	if addr, network := c.Count(a1); addr != 0 || network != 0 || c.Total() != 0 {
		t.Fatalf("after releasing all: addr %d net %d total %d", addr, network, c.Total())
	}
	if len(c.byAddr) != 0 || len(c.byNet) != 0 {
		t.Fatalf("maps keep %d and %d entries after release", len(c.byAddr), len(c.byNet))
	}
}

func TestConnCounterZeroValueUnlimited(t *testing.T) {
	var c ConnCounter
	a := netip.MustParseAddr("2001:db8::1")
	for range 1000 {
		if c.Acquire(a) != Allowed {
			t.Fatal("zero ConnCounter refused")
		}
	}
}

// Concurrent acquire/release never lets more than PerAddr through at once.
func TestConnCounterConcurrent(t *testing.T) {
	c := &ConnCounter{PerAddr: 5}
	a := netip.MustParseAddr("192.0.2.9")
	var mu sync.Mutex
	held, peak := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 200 {
				if c.Acquire(a) != Allowed {
					continue
				}
				mu.Lock()
				held++
				peak = max(peak, held)
				mu.Unlock()
				mu.Lock()
				held--
				mu.Unlock()
				c.Release(a)
			}
		})
	}
	wg.Wait()
	if peak > 5 {
		t.Fatalf("peak %d connections held, cap 5", peak)
	}
	if c.Total() != 0 {
		t.Fatalf("Total = %d after all released", c.Total())
	}
}
