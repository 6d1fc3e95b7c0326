package nat

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// TestTraceHopHonoursCancel: the path test stops when the probe's ctx is
// cancelled, not only at its deadline (natcheck cancels on SIGINT).
func TestTraceHopHonoursCancel(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	hop := traceHop(ctx, pc, netcore.AddrPort(silent.LocalAddr()), 1, 10*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("traceHop returned %v after its ctx was cancelled", d-100*time.Millisecond)
	}
	if hop.IsValid() {
		t.Errorf("hop %v on loopback", hop)
	}
}
