package proctest

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestWaitExitHasAllOutput: once WaitExit returns, Output holds the last
// line the process printed (TestShutdownTimeout once read the output while
// the scanner still held it).
func TestWaitExitHasAllOutput(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for i := range 300 {
		p := Start(t, exec.Command(sh, "-c", "echo first; echo last"))
		p.WaitExit(t, 10*time.Second)
		if out := p.Output(); !strings.HasSuffix(out, "last") {
			t.Fatalf("run %d: output after exit %q, want it to end with the last line", i, out)
		}
	}
}
