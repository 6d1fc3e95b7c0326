// Package leakcheck finds goroutines a test left running.
//
// Every package that starts servers calls it from TestMain, so a server whose
// Close or Shutdown forgets to wait for a goroutine fails the package's tests.
//
// Typical usage:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// settle is how long Main waits for goroutines to finish after the tests:
// servers that were closed may still be returning from a final read. Long
// enough for a loaded 2-core CI machine, short enough not to slow a passing run.
const settle = 5 * time.Second

// Main runs the tests and then fails the binary if goroutines started by the
// tests are still running once they had settle time to finish.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with cleanup of its own: it
// returns the exit code.
func Run(m *testing.M) int {
	code := m.Run()
	if code == 0 {
		if leaked := wait(settle); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "leakcheck: %d goroutine(s) still running after the tests:\n\n%s\n",
				len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	return code
}

// Check registers a cleanup on t that fails t if goroutines started during the
// test are still running when it ends (after a grace period).
func Check(t testing.TB) {
	t.Helper()
	before := map[string]bool{}
	for _, g := range interesting() {
		before[firstLine(g)] = true
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(settle)
		for {
			var leaked []string
			for _, g := range interesting() {
				if !before[firstLine(g)] {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leakcheck: %d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func wait(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		g := interesting()
		if len(g) == 0 || time.Now().After(deadline) {
			return g
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstLine returns "goroutine N", the goroutine's identity without its
// state, which changes between two looks.
func firstLine(g string) string {
	if i := strings.IndexByte(g, '['); i >= 0 {
		return strings.TrimSpace(g[:i])
	}
	return g
}

// ignored are stacks that belong to the runtime or the testing package, not
// to code under test: test goroutines themselves (t.Run, parallel tests), the
// main goroutine, the fuzzing engine, signal handling.
var ignored = []string{
	"created by testing.",
	"testing.(*M).Run",
	"testing.runFuzzing",
	"main.main()",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"created by runtime.gc",
	"leakcheck.interesting",
}

func interesting() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		stack := strings.TrimSpace(g)
		if stack == "" {
			continue
		}
		skip := false
		for _, pat := range ignored {
			if strings.Contains(stack, pat) {
				skip = true
				break
			}
		}
		if !skip {
			out = append(out, stack)
		}
	}
	sort.Strings(out)
	return out
}
