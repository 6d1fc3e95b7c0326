package dnssplit

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
	"github.com/miekg/dns"
)

// TestUDPServePacketSurvivesEMFILE: reads failing with EMFILE pause the
// reader; they neither end ServePacket nor spin. ServePacket closes the
// socket it was given when it returns.
func TestUDPServePacketSurvivesEMFILE(t *testing.T) {
	s := splitServer(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fpc := netcoretest.NewPacketConn(pc, 5)
	done := make(chan error, 1)
	go func() { done <- s.ServePacket(fpc) }()
	addr := pc.LocalAddr().String()
	// The first queries may be sent while the reader is still failing; the
	// kernel buffers them, and the reader gets them after the back-off.
	r, err := exchangeTimeout("udp", "127.0.0.1", addr, q("blog.example.com.", dns.TypeA), 10*time.Second)
	if err != nil {
		select {
		case err := <-done:
			t.Fatalf("ServePacket ended on EMFILE: %v", err)
		default:
			t.Fatalf("no answer after EMFILE: %v", err)
		}
	}
	if got := firstA(r); got != "203.0.113.1" {
		t.Fatalf("answer %q, want 203.0.113.1", got)
	}
	if n := fpc.Failures.Load(); n != 5 {
		t.Errorf("%d EMFILE failures injected, want 5", n)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("ServePacket = %v, want ErrServerClosed", err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("socket still open after ServePacket returned: %v", err)
	}
}

// TestUDPServePacketClosedSocket: a socket closed under ServePacket (not by
// Shutdown) ends it with a wrapped net.ErrClosed.
func TestUDPServePacketClosedSocket(t *testing.T) {
	s := splitServer(t)
	defer s.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	if err := s.ServePacket(pc); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ServePacket on a closed socket = %v, want net.ErrClosed", err)
	}
}
