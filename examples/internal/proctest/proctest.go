// Package proctest runs the example binaries in their tests as an operator
// would: built with go build, started with flags and a file, watched through
// their log lines, signalled, and timed to their exit.
package proctest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// handedOut holds every port FreePort returned in this process: a port
// released by one call can come back from the kernel on the next, and two
// listeners of one config must not be given the same port.
var handedOut struct {
	sync.Mutex
	ports map[string]bool
}

// FreePort asks the kernel for a port that is free for both TCP and UDP on
// 127.0.0.1 and releases it for the binary to bind ("127.0.0.1:PORT"). It
// never returns the same port twice in one test process.
func FreePort(t testing.TB) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		pc.Close()
		handedOut.Lock()
		seen := handedOut.ports[addr]
		if handedOut.ports == nil {
			handedOut.ports = map[string]bool{}
		}
		handedOut.ports[addr] = true
		handedOut.Unlock()
		if seen {
			continue
		}
		return addr
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}

// Binary builds the main package in dir once per test process and returns
// the path of the executable; Cleanup removes it. With -short it skips the
// test.
type Binary struct {
	Dir  string // the package directory, "." for the test's own
	once sync.Once
	path string
	tmp  string
	err  error
}

// Path builds the binary (the first time) and returns its path.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	b.once.Do(func() {
		b.tmp, b.err = os.MkdirTemp("", "hairpin-bin-")
		if b.err != nil {
			return
		}
		b.path = filepath.Join(b.tmp, filepath.Base(mustAbs(b.Dir)))
		out, err := exec.Command("go", "build", "-o", b.path, b.Dir).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Cleanup removes the built binary, if one was built; call it from TestMain.
func (b *Binary) Cleanup() {
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

func mustAbs(dir string) string {
	a, err := filepath.Abs(dir)
	if err != nil {
		return "bin"
	}
	return a
}

// Process is a running binary whose output lines (stdout and stderr) are
// watched.
type Process struct {
	Cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	read   chan struct{} // closed when every output line is in lines
	mu     sync.Mutex
	lines  []string
	cond   *sync.Cond
	done   bool
	state  *os.ProcessState
}

// Start starts cmd. At the end of the test the process gets SIGTERM and 15 s
// to exit; if the test failed, its output is logged.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, exited: make(chan struct{}), read: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.done = true
		p.cond.Broadcast()
		p.mu.Unlock()
		close(p.read)
	}()
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		p.WaitExit(t, 15*time.Second)
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), p.Output())
		}
	})
	return p
}

// Output returns every line printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// WaitFor blocks until a line containing s appears at or after line from,
// and returns the index after it: pass it as from to wait for the next
// event. It fails the test if the process exits or within passes first.
func (p *Process) WaitFor(t testing.TB, from int, s string, within time.Duration) int {
	t.Helper()
	timer := time.AfterFunc(within, func() {
		p.mu.Lock()
		p.done = true // wake the waiter; reported below
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := from; ; {
		for ; i < len(p.lines); i++ {
			if strings.Contains(p.lines[i], s) {
				return i + 1
			}
		}
		if p.done {
			t.Fatalf("%s never printed %q; output:\n%s", filepath.Base(p.Cmd.Path), s, strings.Join(p.lines, "\n"))
		}
		p.cond.Wait()
	}
}

// Lines returns how many lines were printed so far (a from for WaitFor).
func (p *Process) Lines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// WaitExit waits up to within for the process to exit, kills it after
// that (failing the test), and returns its exit code. Every line the
// process printed is in Output when it returns: the scanner may still hold
// the last ones when the process has been waited for.
func (p *Process) WaitExit(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		_ = p.Cmd.Process.Kill()
		<-p.exited
		t.Errorf("%s did not exit within %s", filepath.Base(p.Cmd.Path), within)
	}
	<-p.read // the pipe is closed once the process has been waited for
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.ExitCode()
}
