package relay

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-reuseport"
	"github.com/pion/stun/v3"

	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
)

// TestServePacketSurvivesEMFILE: failed UDP reads (a receive out of
// descriptors, ENOBUFS) are counted and retried; they must not stop UDP
// serving, and Close still ends ServePacket with ErrServerClosed.
func TestServePacketSurvivesEMFILE(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fpc := netcoretest.NewPacketConn(pc, 5)
	s := &Server{Users: map[string]string{"a": "pw"}}
	done := make(chan error, 1)
	go func() { done <- s.ServePacket(fpc) }()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The kernel queues the request while the reader backs off.
	if _, err := c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1500)); err != nil {
		select {
		case err := <-done:
			t.Fatalf("ServePacket ended on EMFILE: %v", err)
		default:
			t.Fatalf("no Binding answer after EMFILE: %v", err)
		}
	}
	if n := fpc.Failures.Load(); n != 5 {
		t.Errorf("%d EMFILE failures injected, want 5", n)
	}
	if n := s.Stats().ReadErrors; n != 5 {
		t.Errorf("Stats.ReadErrors %d, want 5", n)
	}
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("ServePacket = %v, want ErrServerClosed", err)
	}
}

// TestListenAndServeBusyPort: a port another socket holds, UDP or TCP, with
// or without SO_REUSEPORT (as a second copy of this relay would hold it),
// fails ListenAndServe at once with one line naming the address.
func TestListenAndServeBusyPort(t *testing.T) {
	for _, tt := range []struct {
		name string
		hold func() (addr string, closeFn func() error, err error)
	}{
		{"udp", func() (string, func() error, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			return pc.LocalAddr().String(), pc.Close, nil
		}},
		{"udp SO_REUSEPORT", func() (string, func() error, error) {
			pc, err := reuseport.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			return pc.LocalAddr().String(), pc.Close, nil
		}},
		{"tcp", func() (string, func() error, error) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			return l.Addr().String(), l.Close, nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, closeFn, err := tt.hold()
			if err != nil {
				t.Fatal(err)
			}
			defer closeFn()
			s := &Server{Users: map[string]string{"a": "pw"}}
			done := make(chan error, 1)
			go func() { done <- s.ListenAndServe(addr) }()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				s.Close()
				<-done
				t.Fatalf("ListenAndServe on busy %s is serving", addr)
			}
			if err == nil || errors.Is(err, ErrServerClosed) {
				t.Fatalf("ListenAndServe = %v, want an error", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "relay: ") || !strings.Contains(msg, addr) || strings.Contains(msg, "\n") ||
				!errors.Is(err, syscallEADDRINUSE) {
				t.Errorf("error %q: want one line starting with relay:, naming %s, wrapping EADDRINUSE", msg, addr)
			}
		})
	}
}
