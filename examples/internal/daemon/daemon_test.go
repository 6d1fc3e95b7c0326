package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeSignals is Signals fed by the test instead of the process's signals.
func fakeSignals() (*Signals, func(), chan os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	return &Signals{ctx: ctx, stop: cancel, hup: hup}, cancel, hup
}

// TestServe: each outcome of a reload is logged as the binaries document
// it, a failure exits 1, and a shutdown cut by the timeout exits 0.
func TestServe(t *testing.T) {
	sig, term, hup := fakeSignals()
	var logs syncBuffer
	reloads := make(chan struct{}, 3)
	results := []struct {
		restart []string
		err     error
	}{{nil, errors.New("config: line 3: dns.listen: bad")}, {[]string{"dns.listen"}, nil}, {nil, nil}}
	var shutdownCtx context.Context
	done := make(chan int, 1)
	go func() {
		done <- sig.Serve(Service{
			Name: "test", Log: slog.New(slog.NewTextHandler(&logs, nil)), Timeout: 50 * time.Millisecond,
			Reload: func() ([]string, error) {
				r := results[0]
				results = results[1:]
				defer func() { reloads <- struct{}{} }()
				return r.restart, r.err
			},
			Shutdown: func(ctx context.Context) error {
				shutdownCtx = ctx
				<-ctx.Done() // a connection that never ends
				return ctx.Err()
			},
		})
	}()
	for range 3 {
		hup <- syscall.SIGHUP
		<-reloads
	}
	start := time.Now()
	term()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after a shutdown cut by the timeout, want 0", code)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("shutdown took %s with a 50ms timeout", took)
	}
	if _, ok := shutdownCtx.Deadline(); !ok {
		t.Error("Shutdown got no deadline")
	}
	out := logs.String()
	for _, want := range []string{
		`msg="test ready"`,
		`msg="reload rejected; still serving the previous configuration" err="config: line 3: dns.listen: bad"`,
		`msg="configuration reloaded; these keys changed but take effect at the next restart" restart=[dns.listen]`,
		`msg="configuration reloaded"` + "\n",
		`msg="shutdown reached -shutdown-timeout; closed the connections still open"`,
		`msg="test stopped"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestServeFailure(t *testing.T) {
	sig, _, hup := fakeSignals()
	var logs syncBuffer
	failed := make(chan error, 1)
	shut := false
	failed <- errors.New("dns/udp stopped serving")
	hup <- syscall.SIGHUP // no Reload: logged, not fatal
	code := sig.Serve(Service{Name: "test", Log: slog.New(slog.NewTextHandler(&logs, nil)), Timeout: time.Second,
		Shutdown: func(context.Context) error { shut = true; return nil }, Failed: failed})
	if code != 1 || !shut {
		t.Errorf("exit %d, shut down %v; want 1 and true", code, shut)
	}
	if out := logs.String(); !strings.Contains(out, "a part stopped serving; shutting down") {
		t.Errorf("log:\n%s", out)
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		ok     bool
		stdout string
		stderr string
	}{
		{[]string{"-h"}, 0, false, "test: does things.\n\nUsage: test -config FILE\n", ""},
		{[]string{"-config", "x.yaml", "-shutdown-timeout", "3s", "-check"}, 0, true, "", ""},
		{[]string{"-nosuch"}, 2, false, "", "flag provided but not defined: -nosuch"},
		{[]string{"extra"}, 2, false, "", "test: unexpected arguments: extra"},
		{[]string{"-shutdown-timeout", "0s"}, 2, false, "", "-shutdown-timeout must be positive"},
	} {
		var stdout, stderr strings.Builder
		c := New("test", "test: does things.", "test -config FILE", &stdout, &stderr)
		code, ok := c.Parse(tt.args)
		if code != tt.code || ok != tt.ok || !strings.HasPrefix(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
			t.Errorf("%q: code %d ok %v stdout %q stderr %q", tt.args, code, ok, stdout.String(), stderr.String())
		}
		if tt.ok && (c.Config != "x.yaml" || c.ShutdownTimeout != 3*time.Second || !c.Check) {
			t.Errorf("%q: parsed %+v", tt.args, c)
		}
	}
}
