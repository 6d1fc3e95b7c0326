package nat

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestTCPBindingHonoursCancel: a TCP server that accepts and stays silent
// holds the TCP test only until the probe's ctx is cancelled.
func TestTCPBindingHonoursCancel(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range accepted {
			c.Close()
		}
	})
	c := &Client{Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, cn, err := c.tcpBinding(ctx, "tcp4", "", netip.MustParseAddrPort(l.Addr().String()))
	if cn != nil {
		cn.Close()
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("tcpBinding returned %v after its ctx was cancelled", d-100*time.Millisecond)
	}
	if err == nil {
		t.Error("a silent server answered")
	}
}
