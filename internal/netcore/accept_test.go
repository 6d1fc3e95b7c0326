package netcore_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
)

func TestIsTemporary(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"EMFILE", netcoretest.EMFILE("accept", "tcp"), true},
		{"closed", net.ErrClosed, false},
		{"wrapped closed", &net.OpError{Op: "accept", Err: net.ErrClosed}, false},
		{"plain", errors.New("boom"), false},
	} {
		if got := netcore.IsTemporary(tc.err); got != tc.want {
			t.Errorf("%s: IsTemporary = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// An accept loop that sees EMFILE keeps serving: the connection dialled while
// Accept fails is served once descriptors are back.
func TestAcceptLoopSurvivesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fl := netcoretest.NewListener(ln, 3)
	stop := make(chan struct{})
	served := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- netcore.AcceptLoop(fl, stop, func(c net.Conn) {
			c.Close()
			served <- struct{}{}
		})
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-served:
	case err := <-done:
		t.Fatalf("AcceptLoop ended on EMFILE: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("connection never served")
	}
	if n := fl.Failures.Load(); n != 3 {
		t.Fatalf("%d EMFILE failures injected, want 3", n)
	}
	close(stop)
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("AcceptLoop after stop = %v, want nil", err)
	}
}

// A stop during the back-off pause ends the loop at once.
func TestAcceptLoopStopDuringBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fl := netcoretest.NewListener(ln, 1<<30)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- netcore.AcceptLoop(fl, stop, func(c net.Conn) { c.Close() }) }()
	for fl.Failures.Load() < 5 { // 5+10+20+40 ms of back-off: the loop is pausing now
		time.Sleep(time.Millisecond)
	}
	close(stop)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("AcceptLoop = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not end the back-off")
	}
}

// A listener that fails for good ends the loop with that error.
func TestAcceptLoopReturnsFatalError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = netcore.AcceptLoop(ln, make(chan struct{}), func(c net.Conn) { c.Close() })
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptLoop on a closed listener = %v, want net.ErrClosed", err)
	}
}
