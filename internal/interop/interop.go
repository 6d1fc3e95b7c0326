// Package interop gates tests that need things outside Go: root, network
// namespaces, and real peers such as coturn, unbound, dig or HAProxy.
//
// Outside CI such a test skips with a clear reason when what it needs is
// missing. With HAIRPIN_LAB=required in the environment (CI sets it) the same
// test fails instead, so a missing package can never turn into a silent skip.
//
// Typical usage:
//
//	func TestAgainstCoturn(t *testing.T) {
//		paths := interop.Need(t, "turnserver", "turnutils_uclient")
//		cmd := exec.CommandContext(t.Context(), paths["turnserver"], ...)
//		...
//	}
package interop

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// EnvVar is the environment variable that, set to "required", turns skips into failures.
const EnvVar = "HAIRPIN_LAB"

// Required reports whether missing prerequisites must fail tests rather than skip them.
func Required() bool { return os.Getenv(EnvVar) == "required" }

// Unavailable skips t with reason, or fails it when HAIRPIN_LAB=required.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (HAIRPIN_LAB=required, so this is a failure, not a skip)", reason)
	}
	t.Skipf("%s; install it or set %s=required to make this a failure", reason, EnvVar)
}

// NeedRoot stops t unless the test process runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (network namespaces, nftables)")
	}
}

// Need looks up each named program on PATH and stops t (skip, or fail when
// required) if any is missing. It returns the resolved paths by name.
func Need(t testing.TB, programs ...string) map[string]string {
	t.Helper()
	paths := make(map[string]string, len(programs))
	var missing []string
	for _, p := range programs {
		path, err := exec.LookPath(p)
		if err != nil {
			missing = append(missing, p)
			continue
		}
		paths[p] = path
	}
	if len(missing) > 0 {
		Unavailable(t, "needs programs not on PATH: "+strings.Join(missing, ", "))
	}
	return paths
}
