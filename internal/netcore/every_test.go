package netcore

import (
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	var e Every
	t0 := time.Unix(1e9, 0)
	for _, c := range []struct {
		at   time.Duration
		ok   bool
		prev time.Duration // -1: zero Time
	}{
		{0, true, -1},
		{time.Second, false, 0},
		{9 * time.Second, false, 0},
		{10 * time.Second, true, 0},
		{15 * time.Second, false, 0},
		{25 * time.Second, true, 10 * time.Second},
	} {
		prev, ok := e.Allow(t0.Add(c.at), 10*time.Second)
		if ok != c.ok {
			t.Fatalf("at %v: ok %v, want %v", c.at, ok, c.ok)
		}
		if ok && c.prev < 0 && !prev.IsZero() || ok && c.prev >= 0 && !prev.Equal(t0.Add(c.prev)) {
			t.Errorf("at %v: prev %v", c.at, prev)
		}
	}
}
