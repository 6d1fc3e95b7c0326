package nat

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock advances only when slept on.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return ctx.Err()
}

func TestSearchLifetime(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration // true lifetime; 0 = forever
		max, res time.Duration
	}{
		{"20s", 20 * time.Second, 2 * time.Minute, 2 * time.Second},
		{"30s default resolution", 30 * time.Second, 2 * time.Minute, 0},
		{"180s beyond max", 180 * time.Second, 2 * time.Minute, time.Second},
		{"forever", 0, time.Minute, time.Second},
		{"1s shorter than the first point", time.Second, time.Minute, 500 * time.Millisecond},
		{"odd 47s", 47 * time.Second, 5 * time.Minute, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(1e9, 0)}
			arms := 0
			arm := func(context.Context) (func(context.Context) (bool, error), error) {
				arms++
				at := clk.Now()
				return func(context.Context) (bool, error) {
					idle := clk.Now().Sub(at)
					return tt.lifetime == 0 || idle < tt.lifetime, nil
				}, nil
			}
			start := clk.Now()
			var steps []LifetimeStep
			alive, dead, err := searchLifetime(t.Context(), clk, tt.max, tt.res, arm, func(s LifetimeStep) { steps = append(steps, s) })
			if err != nil {
				t.Fatal(err)
			}
			// Progress: each wait is announced, then its result; the
			// longest idle reported alive is the answer.
			var longest time.Duration
			for i, s := range steps {
				if s.Max != tt.max {
					t.Errorf("step %d: Max %v, want %v", i, s.Max, tt.max)
				}
				if s.Checked != (i%2 == 1) || (s.Checked && steps[i-1].Idle != s.Idle) {
					t.Fatalf("steps out of order: %+v", steps)
				}
				if s.Checked && s.Alive {
					longest = max(longest, s.Idle)
				}
			}
			if len(steps) == 0 || longest != alive {
				t.Errorf("progress says alive after %v, search %v (%d steps)", longest, alive, len(steps))
			}
			took := clk.Now().Sub(start)
			if tt.lifetime == 0 || tt.lifetime > tt.max {
				if alive != tt.max || dead != 0 {
					t.Errorf("alive %v dead %v, want %v and 0", alive, dead, tt.max)
				}
				return
			}
			if alive >= tt.lifetime || (dead != 0 && dead < tt.lifetime) || dead == 0 {
				t.Errorf("bounds [%v, %v] do not hold %v", alive, dead, tt.lifetime)
			}
			res := tt.res
			if res == 0 {
				res = max(time.Second, alive/8)
			}
			if dead-alive > res {
				t.Errorf("bounds [%v, %v] wider than %v", alive, dead, res)
			}
			// Parallel rounds: far less than a sequential binary search.
			if took > 4*tt.lifetime+10*time.Second {
				t.Errorf("search took %v (virtual) for a %v lifetime", took, tt.lifetime)
			}
			t.Logf("lifetime %v: [%v, %v] in %v virtual, %d mappings", tt.lifetime, alive, dead, took, arms)
		})
	}
}

func TestProbeLifetimeLoopback(t *testing.T) {
	addrs := startServer(t, &Server{})
	// Loopback has no NAT, so every mapping lives forever: the search must
	// end at LifetimeMax. The fake clock makes it instant.
	c := &Client{Servers: []string{addrs[0].String()}, Lifetime: true, LifetimeMax: 30 * time.Second,
		clock: &fakeClock{now: time.Unix(1e9, 0)}}
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.MappingLifetime != 30*time.Second || rep.MappingExpired != 0 || rep.SuggestedKeepalive != 15*time.Second {
		for _, p := range rep.Probes {
			t.Logf("%+v", p)
		}
		t.Errorf("lifetime %v expired %v keepalive %v", rep.MappingLifetime, rep.MappingExpired, rep.SuggestedKeepalive)
	}
}
