package proxy

import (
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTunnelConnHeldOK: a held streamOK goes out as the first byte of the
// first write, in the same write, or alone at CloseWrite or Close; a stream
// whose OK was sent at once writes as it is told.
func TestTunnelConnHeldOK(t *testing.T) {
	big := strings.Repeat("x", 40<<10) // more than the pooled buffer
	for _, tc := range []struct {
		name string
		held bool
		do   func(c *tunnelConn)
		want []string
	}{
		{"first write carries it", true, func(c *tunnelConn) { c.Write([]byte("hello")); c.Write([]byte("more")) },
			[]string{"\x00hello", "more"}},
		{"large first write", true, func(c *tunnelConn) {
			if n, err := c.Write([]byte(big)); n != len(big) || err != nil {
				t.Errorf("Write = %d, %v; want %d", n, err, len(big))
			}
		}, []string{"\x00" + big[:32<<10-1], big[32<<10-1:]}},
		{"close without writing", true, func(c *tunnelConn) { c.Close() }, []string{"\x00"}},
		{"close after writing", true, func(c *tunnelConn) { c.Write([]byte("hi")); c.Close() }, []string{"\x00hi"}},
		{"half-close without writing", true, func(c *tunnelConn) { c.CloseWrite(); c.Close() }, []string{"\x00"}},
		{"read-from", true, func(c *tunnelConn) { c.ReadFrom(strings.NewReader("copied")) }, []string{"\x00copied"}},
		{"sent at once", false, func(c *tunnelConn) { c.Write([]byte("hello")); c.Close() }, []string{"\x00", "hello"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWriteLog()
			c := &tunnelConn{Conn: w}
			if tc.held {
				c.holdOK()
			} else if err := c.sendOK(); err != nil {
				t.Fatal(err)
			}
			tc.do(c)
			c.Close()
			if got := w.log(); !slices.Equal(got, tc.want) {
				t.Errorf("writes %q, want %q", shorten(got), shorten(tc.want))
			}
		})
	}
}

// TestTunnelConnOKTimer: a target that writes nothing (a backend waiting
// for more from the client) still gets its stream's OK out, alone, after
// okHoldMax; what it writes later follows it.
func TestTunnelConnOKTimer(t *testing.T) {
	w := newWriteLog()
	c := &tunnelConn{Conn: w}
	start := time.Now()
	c.holdOK()
	select {
	case <-w.wrote:
	case <-time.After(10 * okHoldMax):
		t.Fatalf("no OK after %v", 10*okHoldMax)
	}
	if d := time.Since(start); d < okHoldMax {
		t.Errorf("OK sent after %v, before okHoldMax %v", d, okHoldMax)
	}
	c.Write([]byte("late"))
	c.Close()
	if got, want := w.log(), []string{"\x00", "late"}; !slices.Equal(got, want) {
		t.Errorf("writes %q, want %q", got, want)
	}
}

// TestTunnelConnOKOrder: while the held OK is being written alone (the
// timer's flush), a Write of the target waits for it: the OK is the
// stream's first byte, always.
func TestTunnelConnOKOrder(t *testing.T) {
	for range 20 {
		w := newWriteLog()
		w.gate, w.entered = make(chan struct{}), make(chan struct{})
		entered := w.entered
		c := &tunnelConn{Conn: w}
		c.holdOK()
		var wg sync.WaitGroup
		wg.Go(func() { c.flushOK() })
		<-entered // the OK's write has begun and waits on gate
		wg.Go(func() { c.Write([]byte("data")) })
		for range 100 {
			runtime.Gosched() // give the Write every chance to overtake
		}
		close(w.gate)
		wg.Wait()
		c.Close()
		if got, want := w.log(), []string{"\x00", "data"}; !slices.Equal(got, want) {
			t.Fatalf("writes %q, want %q", got, want)
		}
	}
}

// shorten abbreviates long writes for the failure message.
func shorten(l []string) []string {
	var out []string
	for _, s := range l {
		if len(s) > 20 {
			s = s[:10] + "…(" + strconv.Itoa(len(s)) + ")"
		}
		out = append(out, s)
	}
	return out
}
