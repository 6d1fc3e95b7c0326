package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// waitListening returns the address s listens on once a Serve call of
// ListenAndServe registered it (every socket of ListenAndServe is bound by
// then), or fails the test if ListenAndServe returned first.
func waitListening(t *testing.T, s *Server, errc <-chan error) string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.listens.mu.RLock()
		var addr netip.AddrPort
		for ap := range s.listens.addrs {
			addr = ap
		}
		s.listens.mu.RUnlock()
		if addr.IsValid() {
			return addr.String()
		}
		select {
		case err := <-errc:
			t.Fatalf("ListenAndServe: %v", err)
		case <-deadline:
			t.Fatal("ListenAndServe did not start listening in 5 s")
		case <-time.After(time.Millisecond):
		}
	}
}

// TestShutdownFreesPort: Shutdown closes the listening sockets at once, so a
// new instance's ListenAndServe on the same address starts and serves UDP
// and TCP clients while the old one drains; the old one's allocation on an
// accepted TCP connection keeps relaying until it ends, and only then does
// Shutdown return. Its UDP allocation ends with the UDP socket: its client's
// packets now reach the new instance.
func TestShutdownFreesPort(t *testing.T) {
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAddr := netcore.AddrPort(peer.LocalAddr())

	old := &Server{Users: map[string]string{"a": "pw"}, Peers: loopbackOnly, Logger: quiet}
	oldErr := make(chan error, 1)
	go func() { oldErr <- old.ListenAndServe("127.0.0.1:0") }()
	addr := waitListening(t, old, oldErr)
	t.Cleanup(func() {
		old.Close()
		if err := <-oldErr; !errors.Is(err, ErrServerClosed) {
			t.Errorf("old ListenAndServe: %v, want ErrServerClosed", err)
		}
	})

	tc := dialRaw(t, "tcp", addr, "a", "pw")
	if code := tc.allocate(); code != 0 {
		t.Fatalf("TCP allocate: %d", code)
	}
	if code := tc.channelBind(0x4000, peerAddr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}
	uc := dialRaw(t, "udp", addr, "a", "pw")
	if code := uc.allocate(); code != 0 {
		t.Fatalf("UDP allocate: %d", code)
	}
	// Accepted before Shutdown, allocating during it: 508.
	late := dialRaw(t, "tcp", addr, "a", "pw")
	if _, code := late.do(stun.MethodBinding); code != 0 {
		t.Fatalf("Binding: %d", code)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- old.Shutdown(ctx)
	}()
	for !old.draining.Load() {
		time.Sleep(time.Millisecond)
	}

	next := &Server{Users: map[string]string{"a": "pw"}, Logger: quiet}
	nextErr := make(chan error, 1)
	go func() { nextErr <- next.ListenAndServe(addr) }()
	if got := waitListening(t, next, nextErr); got != addr {
		t.Fatalf("new instance listens on %s, want %s", got, addr)
	}
	t.Cleanup(func() {
		next.Close()
		if err := <-nextErr; !errors.Is(err, ErrServerClosed) {
			t.Errorf("new ListenAndServe: %v, want ErrServerClosed", err)
		}
	})
	for _, network := range []string{"udp", "tcp"} {
		if code := dialRaw(t, network, addr, "a", "pw").allocate(); code != 0 {
			t.Errorf("%s allocate on the new instance: %d", network, code)
		}
	}

	// The old instance still relays for its TCP client.
	if code := late.allocate(); code != 508 {
		t.Errorf("allocate on the old instance while draining: %d, want 508", code)
	}
	tc.channelData(0x4000, []byte("while draining"))
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "while draining" {
		t.Fatalf("peer got %q, %v", buf[:n], err)
	}
	if _, err := peer.WriteTo([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	if got, err := tc.readStreamData(); err != nil || string(got) != "back" {
		t.Fatalf("TCP client got %q, %v", got, err)
	}
	if got := old.Stats().Allocations; got != 1 {
		t.Errorf("old instance has %d allocations while draining, want 1 (the TCP one)", got)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a TCP allocation alive", err)
	default:
	}

	if _, code := tc.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); code != 0 {
		t.Fatalf("refresh(0): %d", code)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestShutdownFreesTLSPort: as TestShutdownFreesPort, for ListenAndServeTLS:
// the TLS listening socket closes at once, a new instance serves TLS on the
// address, and the old instance's TLS allocation relays during the drain.
func TestShutdownFreesTLSPort(t *testing.T) {
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAddr := netcore.AddrPort(peer.LocalAddr())

	old := &Server{Users: map[string]string{"a": "pw"}, Peers: loopbackOnly, Logger: quiet, TLSConfig: selfSigned(t)}
	oldErr := make(chan error, 1)
	go func() { oldErr <- old.ListenAndServeTLS("127.0.0.1:0", "", "") }()
	addr := waitListening(t, old, oldErr)
	t.Cleanup(func() {
		old.Close()
		if err := <-oldErr; !errors.Is(err, ErrServerClosed) {
			t.Errorf("old ListenAndServeTLS: %v, want ErrServerClosed", err)
		}
	})
	c := dialTransport(t, "tls", addr, "a", "pw")
	if code := c.allocate(); code != 0 {
		t.Fatalf("TLS allocate: %d", code)
	}
	if code := c.channelBind(0x4000, peerAddr); code != 0 {
		t.Fatalf("ChannelBind: %d", code)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- old.Shutdown(ctx)
	}()
	for !old.draining.Load() {
		time.Sleep(time.Millisecond)
	}
	next := &Server{Users: map[string]string{"a": "pw"}, Logger: quiet, TLSConfig: selfSigned(t)}
	nextErr := make(chan error, 1)
	go func() { nextErr <- next.ListenAndServeTLS(addr, "", "") }()
	waitListening(t, next, nextErr)
	t.Cleanup(func() {
		next.Close()
		if err := <-nextErr; !errors.Is(err, ErrServerClosed) {
			t.Errorf("new ListenAndServeTLS: %v, want ErrServerClosed", err)
		}
	})
	if code := dialTransport(t, "tls", addr, "a", "pw").allocate(); code != 0 {
		t.Errorf("TLS allocate on the new instance: %d", code)
	}

	c.channelData(0x4000, []byte("while draining"))
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := peer.ReadFrom(buf); err != nil || string(buf[:n]) != "while draining" {
		t.Fatalf("peer got %q, %v", buf[:n], err)
	}
	if _, code := c.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); code != 0 {
		t.Fatalf("refresh(0): %d", code)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
