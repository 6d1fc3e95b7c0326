package dnssplit

import (
	"errors"
	"fmt"
	"testing"
	"time"

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
