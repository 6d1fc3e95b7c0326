package dnssplit

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
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

// tcpClient is one held TCP connection from a chosen loopback source.
type tcpClient struct {
	c  net.Conn
	dc *dns.Conn
}

// dialFrom connects to addr from src; it fails the test only if the dial
// itself fails (a refused connection is closed by the server after accept).
func dialFrom(t *testing.T, src, addr string) *tcpClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpClient{c: c, dc: &dns.Conn{Conn: c}}
}

// ask sends one query and reports whether the answer came back.
func (tc *tcpClient) ask(name string) bool {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	_ = tc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.dc.WriteMsg(m); err != nil {
		return false
	}
	r, err := tc.dc.ReadMsg()
	return err == nil && len(r.Answer) == 1
}

func tcpServer(t *testing.T, s *Server) string {
	t.Helper()
	r := new(Records)
	if err := r.AddString("a.example.com. 60 IN A 192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	s.Views = []*View{{Name: "all", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: r}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

// TestTCPSlotExhaustion is the attack of issue 11 item 12: 32 addresses in
// 32 different /24s, 8 connections each, fill all 256 slots and each sends a
// query now and then. A legitimate client must still get its TCP answer:
// the idlest held connection gives way. (Before: every slot stayed taken
// and the legitimate connection was closed at once.)
func TestTCPSlotExhaustion(t *testing.T) {
	s := new(Server)
	addr := tcpServer(t, s)
	var held []*tcpClient
	for i := range 32 {
		for range 8 {
			tc := dialFrom(t, fmt.Sprintf("127.10.%d.1", i), addr)
			if !tc.ask("a.example.com.") {
				t.Fatalf("attacker connection %d from 127.10.%d.1 not served while slots were free", len(held), i)
			}
			held = append(held, tc)
		}
	}
	if got := s.Stats().TCPRejected; got != 0 {
		t.Fatalf("TCPRejected = %d while filling the slots, want 0", got)
	}
	// The attackers keep their connections alive: each asks again, so the
	// one that asked longest ago is idlest.
	for _, tc := range held[:128] {
		tc.ask("a.example.com.")
	}
	for i := range 3 {
		legit := dialFrom(t, fmt.Sprintf("127.20.0.%d", i+1), addr)
		if !legit.ask("a.example.com.") {
			t.Fatalf("legitimate query %d not served while 256 slots were held", i)
		}
	}
	if got := s.Stats().TCPEvicted; got != 3 {
		t.Errorf("TCPEvicted = %d, want 3", got)
	}
	// The ones closed were among those that had not asked again.
	for _, tc := range held[:128] {
		if !tc.ask("a.example.com.") {
			t.Fatal("a recently active connection was closed instead of an idle one")
		}
	}
}

// TestTCPConnsPerNetwork: addresses of one /24 share 32 slots, however many
// addresses they use; another network still gets in.
func TestTCPConnsPerNetwork(t *testing.T) {
	s := new(Server)
	addr := tcpServer(t, s)
	served := 0
	for i := range 10 {
		for range 8 {
			if dialFrom(t, fmt.Sprintf("127.30.0.%d", i+1), addr).ask("a.example.com.") {
				served++
			}
		}
	}
	if served != defaultMaxTCPConnsPerNetwork {
		t.Fatalf("one /24 got %d connections served, want %d", served, defaultMaxTCPConnsPerNetwork)
	}
	if got := s.Stats().TCPRejected; got != 80-defaultMaxTCPConnsPerNetwork {
		t.Errorf("TCPRejected = %d, want %d", got, 80-defaultMaxTCPConnsPerNetwork)
	}
	if !dialFrom(t, "127.31.0.1", addr).ask("a.example.com.") {
		t.Fatal("another network was shut out")
	}
}

// TestTCPServeSurvivesEMFILE: accept failing with EMFILE (out of
// descriptors) pauses accepting; it does not end Serve. (Before: only
// timeouts were retried, Serve returned, and ListenAndServe closed UDP too.)
func TestTCPServeSurvivesEMFILE(t *testing.T) {
	r := new(Records)
	if err := r.AddString("a.example.com. 60 IN A 192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	s := &Server{Views: []*View{{Name: "all", Records: r}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := netcoretest.NewListener(ln, 5)
	done := make(chan error, 1)
	go func() { done <- s.Serve(fl) }()
	if !dialFrom(t, "127.0.0.1", ln.Addr().String()).ask("a.example.com.") {
		select {
		case err := <-done:
			t.Fatalf("Serve ended on EMFILE: %v", err)
		default:
			t.Fatal("no answer after EMFILE")
		}
	}
	if n := fl.Failures.Load(); n != 5 {
		t.Errorf("%d EMFILE failures injected, want 5", n)
	}
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
	// Serve closed the listener it was given.
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener still open after Serve returned: %v", err)
	}
}

// TestTCPServeFatalAcceptError: an accept error that is not temporary ends
// Serve with a one-line wrapped error.
func TestTCPServeFatalAcceptError(t *testing.T) {
	s := new(Server)
	defer s.Close()
	err := s.Serve(failingListener{})
	if err == nil || errors.Is(err, ErrServerClosed) || !errors.Is(err, errBoom) {
		t.Fatalf("Serve = %v, want the accept error", err)
	}
}

var errBoom = errors.New("boom")

type failingListener struct{}

func (failingListener) Accept() (net.Conn, error) { return nil, errBoom }
func (failingListener) Close() error              { return nil }
func (failingListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func TestIdlestConnection(t *testing.T) {
	mk := func(last int64, inflight int32) *tcpConn {
		c := new(tcpConn)
		c.last.Store(last)
		c.inflight.Store(inflight)
		return c
	}
	a, b, busy := mk(30, 0), mk(20, 0), mk(10, 1)
	for _, tc := range []struct {
		name  string
		conns []*tcpConn
		want  *tcpConn
	}{
		{"oldest idle wins", []*tcpConn{a, b}, b},
		{"busy is never chosen", []*tcpConn{a, b, busy}, b},
		{"all busy", []*tcpConn{busy}, nil},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := &tcpSlots{conns: map[*tcpConn]struct{}{}}
			for _, c := range tc.conns {
				ts.conns[c] = struct{}{}
			}
			if got := ts.idlestLocked(); got != tc.want {
				t.Fatalf("idlest = %p, want %p", got, tc.want)
			}
		})
	}
}
