package natlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// sweep deletes namespaces left by labs whose creating process is gone
// (a test binary killed by a timeout or a signal never runs its cleanups).
// The creator's PID is part of every namespace name. Errors are ignored: a
// concurrent sweeper in another process may delete the same namespaces.
func sweep() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	var b strings.Builder
	for _, e := range entries {
		if pid, ok := creator(e.Name()); ok && !alive(pid) {
			killIn(e.Name())
			fmt.Fprintf(&b, "netns del %s\n", e.Name())
		}
	}
	if b.Len() > 0 {
		_ = runIP("", b.String())
	}
}

// creator parses the PID out of a lab namespace name ("hpl4242-3-lan1").
func creator(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	pidStr, rest, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	seq, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// alive reports whether a process with this PID exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killIn kills the processes still running in namespace ns (say, a server a
// killed test started), which would otherwise keep it alive unnamed.
func killIn(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
