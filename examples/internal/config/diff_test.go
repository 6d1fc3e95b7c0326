package config

import (
	"slices"
	"testing"
)

func TestWithin(t *testing.T) {
	paths := []string{"dns.listen", "dns.views[0].records", "dnsx.a", "log.level", "proxy.routes[1].host", "relay"}
	got := Within(paths, []string{"dns", "log"})
	if want := []string{"dns.listen", "dns.views[0].records", "log.level"}; !slices.Equal(got, want) {
		t.Errorf("Within = %v, want %v", got, want)
	}
	if got := Within(paths, []string{"relay"}); !slices.Equal(got, []string{"relay"}) {
		t.Errorf("a whole section: %v", got)
	}
}
