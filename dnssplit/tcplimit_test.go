package dnssplit

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestTCPConnsPerSource: one client address cannot hold more than its share
// of TCP connections; others still get in, and a closed connection frees
// its place.
func TestTCPConnsPerSource(t *testing.T) {
	r := new(Records)
	if err := r.AddString("a.example.com. 60 IN A 192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Views:                []*View{{Name: "all", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: r}},
		MaxTCPConnsPerSource: 2,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	// dial connects from src and asks one question; it reports whether an
	// answer came back (a refused connection is closed before answering).
	dial := func(src string) (*dns.Conn, bool) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		dc := &dns.Conn{Conn: c}
		m := new(dns.Msg)
		m.SetQuestion("a.example.com.", dns.TypeA)
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if err := dc.WriteMsg(m); err != nil {
			return dc, false
		}
		resp, err := dc.ReadMsg()
		return dc, err == nil && len(resp.Answer) == 1
	}
	c1, ok1 := dial("127.0.0.1")
	_, ok2 := dial("127.0.0.1")
	if !ok1 || !ok2 {
		t.Fatal("the first two connections from one address were not served")
	}
	if _, ok := dial("127.0.0.1"); ok {
		t.Fatal("a third connection from the same address was served")
	}
	if _, ok := dial("127.0.0.2"); !ok {
		t.Fatal("another address was shut out")
	}
	if got := s.Stats().TCPRejected; got != 1 {
		t.Errorf("TCPRejected = %d, want 1", got)
	}
	c1.Close()
	// The server notices the close when its read returns; retry briefly.
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, ok := dial("127.0.0.1"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection did not free its place")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
