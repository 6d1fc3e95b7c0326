package dnssplit

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/libp2p/go-reuseport"
	"github.com/miekg/dns"
)

func TestListenAndServe(t *testing.T) {
	s := splitServer(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(addr) }()
	waitAnswer(t, addr, "blog.example.com.", "203.0.113.1", 5*time.Second) // from 127.0.0.1: outside
	if got := firstA(query(t, "tcp", "127.0.0.2", addr, q("blog.example.com.", dns.TypeA))); got != "192.168.1.20" {
		t.Fatalf("tcp: %q", got)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("ListenAndServe returned %v", err)
	}
}

// TestListenAndServeBusyPort: an address already held by another socket,
// with or without SO_REUSEPORT (another dnssplit, an unbound), makes
// ListenAndServe fail at once instead of sharing the queries with it.
// (Before: it bound with SO_REUSEPORT and joined the other server's group.)
func TestListenAndServeBusyPort(t *testing.T) {
	for _, tc := range []struct {
		name string
		hold func() (string, io.Closer, error)
	}{
		{"udp", func() (string, io.Closer, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			return pc.LocalAddr().String(), pc, nil
		}},
		{"udp reuseport", func() (string, io.Closer, error) {
			pc, err := reuseport.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			return pc.LocalAddr().String(), pc, nil
		}},
		{"tcp reuseport", func() (string, io.Closer, error) {
			l, err := reuseport.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			return l.Addr().String(), l, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, c, err := tc.hold()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := splitServer(t)
			defer s.Close()
			done := make(chan error, 1)
			go func() { done <- s.ListenAndServe(addr) }()
			select {
			case err := <-done:
				if !errors.Is(err, syscall.EADDRINUSE) {
					t.Fatalf("ListenAndServe(%s) = %v, want EADDRINUSE", addr, err)
				}
			case <-time.After(10 * time.Second):
				s.Close()
				<-done
				t.Fatalf("ListenAndServe(%s) served on a port another socket holds", addr)
			}
		})
	}
}

// TestListenAndServePortZero: port 0 gets one port for UDP and TCP.
func TestListenAndServePortZero(t *testing.T) {
	pc, l, err := listenBoth("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer l.Close()
	if u, tc := pc.LocalAddr().String(), l.Addr().String(); u != tc {
		t.Fatalf("udp %s and tcp %s differ", u, tc)
	}
	if _, _, err := listenBoth("127.0.0.1"); err == nil {
		t.Fatal("an address without a port was accepted")
	}
}

// TestListenAndServeUnboundHoldsPort: with a real unbound on the address,
// ListenAndServe is an error, and unbound keeps answering every query.
func TestListenAndServeUnboundHoldsPort(t *testing.T) {
	p := interop.Need(t, "unbound")
	ubAddr, _ := unbound(t, p["unbound"])
	s := splitServer(t)
	defer s.Close()
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ubAddr) }()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("ListenAndServe(%s) = %v, want EADDRINUSE", ubAddr, err)
		}
	case <-time.After(10 * time.Second):
		s.Close()
		<-done
		t.Fatal("ListenAndServe served on unbound's port")
	}
	for i := range 20 {
		r, err := exchangeTimeout("udp", "", ubAddr, q("www.example.net.", dns.TypeA), 5*time.Second)
		if err != nil || firstA(r) != "198.51.100.77" {
			t.Fatalf("query %d: unbound did not answer (%v): %v", i, err, r)
		}
	}
}
