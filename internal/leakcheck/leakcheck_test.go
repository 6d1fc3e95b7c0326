package leakcheck

import (
	"strings"
	"testing"
)

func TestInterestingSeesAStrayGoroutine(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); <-stop }()
	found := false
	for _, g := range interesting() {
		if strings.Contains(g, "TestInterestingSeesAStrayGoroutine") {
			found = true
		}
	}
	close(stop)
	<-done
	if !found {
		t.Fatal("a goroutine started by the test was not reported")
	}
	for _, g := range wait(settle) {
		if strings.Contains(g, "TestInterestingSeesAStrayGoroutine") {
			t.Fatalf("finished goroutine still reported:\n%s", g)
		}
	}
}

func TestMain(m *testing.M) { Main(m) }
