package natlab

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// sweep deletes namespaces left by labs whose creating process is gone
// (a test binary killed by a timeout or a signal never runs its cleanups).
// The creator's PID and start time are part of every namespace name, so a
// reused PID does not keep a stale lab alive. Errors are ignored: a
// concurrent sweeper in another process may delete the same namespaces.
func sweep() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	var b strings.Builder
	for _, e := range entries {
		if stale(e.Name()) {
			killIn(e.Name())
			fmt.Fprintf(&b, "netns del %s\n", e.Name())
		}
	}
	if b.Len() > 0 {
		_ = runIP("", b.String())
	}
}

// stale reports whether name is a lab namespace whose creator is gone.
func stale(name string) bool {
	pid, start, ok := creator(name)
	if !ok {
		return false
	}
	now, running := procStart(pid)
	return !running || (start != 0 && now != start)
}

// labPrefix returns the name prefix of this process's labs:
// "hpl<pid>-<start>-", the start time in base 36.
func labPrefix() string {
	start, _ := procStart(os.Getpid())
	return fmt.Sprintf("%s%d-%s-", namePrefix, os.Getpid(), strconv.FormatUint(start, 36))
}

// creator parses the creating process's PID and start time out of a lab
// namespace name ("hpl4242-2n9c-3-lan1"). Names without the start time
// ("hpl4242-3-lan1", from older versions) give start 0.
func creator(name string) (pid int, start uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, 0, false
	}
	parts := strings.Split(rest, "-")
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 || parts[0] != strconv.Itoa(pid) {
		return 0, 0, false
	}
	isSeq := func(s string) bool {
		_, err := strconv.ParseUint(s, 10, 64)
		return err == nil
	}
	switch {
	case len(parts) == 4 && isSeq(parts[2]) && parts[3] != "":
		start, err := strconv.ParseUint(parts[1], 36, 64)
		if err != nil {
			return 0, 0, false
		}
		return pid, start, true
	case len(parts) == 3 && isSeq(parts[1]) && parts[2] != "":
		return pid, 0, true
	}
	return 0, 0, false
}

// procStart returns the start time of process pid (in clock ticks since
// boot, field 22 of /proc/PID/stat) and whether it is running.
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, true
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, true
	}
	start, err := strconv.ParseUint(f[19], 10, 64) // fields 3.. start at f[0]
	if err != nil {
		return 0, true
	}
	return start, true
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
