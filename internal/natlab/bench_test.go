package natlab

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// TestBuildTime measures how long New takes per kind (build and teardown,
// sequentially, on whatever else the machine is doing). It runs only with
// HAIRPIN_BENCH=1.
func TestBuildTime(t *testing.T) {
	if os.Getenv("HAIRPIN_BENCH") != "1" {
		t.Skip("set HAIRPIN_BENCH=1 to measure lab build times")
	}
	const runs = 7
	for _, cfg := range []Config{
		{Kind: NoNAT}, {Kind: PortRestricted}, {Kind: AddressRestricted, Hairpin: true},
		{Kind: DoubleNAT}, {Kind: Symmetric, SiteB: Symmetric}, {Kind: PortRestricted, IPv6: true},
	} {
		var build, total []time.Duration
		for i := range runs {
			start := time.Now()
			var built time.Duration
			t.Run(fmt.Sprintf("%v-%d", cfg.Kind, i), func(t *testing.T) {
				New(t, cfg)
				built = time.Since(start)
			})
			build = append(build, built)
			total = append(total, time.Since(start))
		}
		slices.Sort(build)
		slices.Sort(total)
		t.Logf("%v (hairpin %v, site B %v, IPv6 %v): build median %v (min %v, max %v); build+teardown median %v",
			cfg.Kind, cfg.Hairpin, cfg.SiteB, cfg.IPv6, build[runs/2].Round(time.Millisecond), build[0].Round(time.Millisecond),
			build[runs-1].Round(time.Millisecond), total[runs/2].Round(time.Millisecond))
	}
}
