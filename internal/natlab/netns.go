package natlab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Do runs fn on a locked OS thread that has entered host's network
// namespace, and returns fn's error. Sockets created by fn stay in that
// namespace after Do returns. fn runs on another goroutine: it must not call
// t.FailNow (t.Fatal) and should not start goroutines that create sockets.
//
// If the thread cannot return to its original namespace it is left locked,
// so the Go runtime terminates it rather than reusing it elsewhere.
func (l *Lab) Do(host Host, fn func() error) error {
	ns, err := l.nsName(host)
	if err != nil {
		return err
	}
	path := "/run/netns/" + ns
	errc := make(chan error, 1)
	go func() {
		errc <- doIn(path, fn)
	}()
	return <-errc
}

func doIn(path string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("natlab: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("natlab: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("natlab: entering %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		return fmt.Errorf("natlab: leaving %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// ListenPacket is net.ListenPacket inside host's namespace.
func (l *Lab) ListenPacket(host Host, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := l.Do(host, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Listen is net.Listen inside host's namespace.
func (l *Lab) Listen(host Host, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := l.Do(host, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// Dial connects from host's namespace, honouring ctx.
func (l *Lab) Dial(ctx context.Context, host Host, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := l.Do(host, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Command returns a command that runs name with args inside host's
// namespace (through `ip netns exec`). The caller starts and waits for it;
// see Start for a command the lab kills at cleanup.
//
// For a host the lab does not have, the command fails to start.
func (l *Lab) Command(host Host, name string, args ...string) *exec.Cmd {
	ns, err := l.nsName(host)
	c := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	if err != nil {
		c.Err = err
	}
	return c
}

// CommandContext is Command with a context that kills the command.
func (l *Lab) CommandContext(ctx context.Context, host Host, name string, args ...string) *exec.Cmd {
	ns, err := l.nsName(host)
	c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	if err != nil {
		c.Err = err
	}
	return c
}

// nsName returns host's namespace name, or an error for a host the lab
// does not have. Unlike Namespace it is safe on any goroutine.
func (l *Lab) nsName(host Host) (string, error) {
	ns, ok := l.ns[host]
	if !ok {
		return "", fmt.Errorf("natlab: this %v lab has no host %v", l.cfg.Kind, host)
	}
	return ns, nil
}

// Start starts a long-running command inside host's namespace and kills it
// (and waits for it) at cleanup, before the lab is torn down. Its combined
// output is logged with t.Log at cleanup if the test failed. Use StartCmd for
// a command whose output you read yourself.
func (l *Lab) Start(host Host, name string, args ...string) (*exec.Cmd, error) {
	c := l.Command(host, name, args...)
	out := &logWriter{t: l.t, prefix: host.String() + " " + name + ": "}
	c.Stdout = out
	c.Stderr = out
	l.t.Cleanup(out.flush)
	if err := l.StartCmd(c); err != nil {
		return nil, err
	}
	return c, nil
}

// StartCmd starts c (typically from Command) and kills it and waits for it
// at cleanup, before the lab is torn down.
func (l *Lab) StartCmd(c *exec.Cmd) error {
	if c.SysProcAttr == nil {
		// Its own process group, so that stop reaches its children too,
		// and killed with the test process should that die first (the
		// signal is sent when the OS thread that started it exits, which
		// Go threads do only with the process).
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if c.WaitDelay == 0 {
		c.WaitDelay = 2 * time.Second
	}
	if err := c.Start(); err != nil {
		return fmt.Errorf("natlab: starting %s: %w", c.Path, err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, c)
	l.mu.Unlock()
	l.t.Cleanup(func() {
		l.mu.Lock()
		for i, p := range l.procs {
			if p == c {
				l.procs = append(l.procs[:i], l.procs[i+1:]...)
				break
			}
		}
		l.mu.Unlock()
		stop(c)
	})
	return nil
}

// stop kills c's process group and waits for it.
func stop(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	if c.SysProcAttr != nil && c.SysProcAttr.Setpgid {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	} else {
		_ = c.Process.Kill()
	}
	_ = c.Wait()
}
