package netcore

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

func listenUDP(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// readAll reads want datagrams with ReadBatch, however the kernel groups them.
func readAll(t *testing.T, b *BatchConn, c *net.UDPConn, want int) []Datagram {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []Datagram
	for len(got) < want {
		ds := make([]Datagram, 8)
		for i := range ds {
			ds[i].Buf = make([]byte, 2048)
		}
		n, err := b.ReadBatch(ds)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d: %v", len(got), want, err)
		}
		if n < 1 || n > len(ds) {
			t.Fatalf("ReadBatch returned %d", n)
		}
		got = append(got, ds[:n]...)
	}
	return got
}

// TestBatchConnLocalAddress is the reason for BatchConn: a socket on the
// unspecified address learns which address each datagram arrived at and
// replies from it, on IPv4 and on a dual-stack socket.
func TestBatchConnLocalAddress(t *testing.T) {
	for _, tc := range []struct {
		network, listen, from, to string
	}{
		// The client is on 127.0.0.1 and asks 127.0.0.2: the kernel would
		// answer from 127.0.0.1 unless told otherwise.
		{"udp4", "0.0.0.0:0", "127.0.0.1", "127.0.0.2"},
		{"udp4", "127.0.0.1:0", "127.0.0.1", "127.0.0.1"},
		{"udp", "[::]:0", "127.0.0.1", "127.0.0.3"},
		{"udp", "[::]:0", "::1", "::1"},
		{"udp6", "[::1]:0", "::1", "::1"},
	} {
		t.Run(tc.network+"/"+tc.listen+"/"+tc.to, func(t *testing.T) {
			srv := listenUDP(t, tc.network, tc.listen)
			to := netip.MustParseAddr(tc.to)
			client := listenUDP(t, "udp", net.JoinHostPort(tc.from, "0"))
			port := srv.LocalAddr().(*net.UDPAddr).Port
			b := NewBatchConn(srv)
			const n = 5
			for i := range n {
				if _, err := client.WriteToUDPAddrPort([]byte(fmt.Sprint("q", i)), netip.AddrPortFrom(to, uint16(port))); err != nil {
					t.Fatal(err)
				}
			}
			got := readAll(t, b, srv, n)
			cl := Canonical(client.LocalAddr().(*net.UDPAddr).AddrPort())
			out := make([]Datagram, n)
			for i, d := range got {
				if want := fmt.Sprint("q", i); string(d.Buf[:d.N]) != want {
					t.Errorf("datagram %d = %q, want %q", i, d.Buf[:d.N], want)
				}
				if d.Addr != cl {
					t.Errorf("datagram %d from %v, want %v", i, d.Addr, cl)
				}
				if d.Local != to {
					t.Errorf("datagram %d arrived at %v, want %v", i, d.Local, to)
				}
				out[i] = Datagram{Buf: []byte(fmt.Sprint("r", i)), Addr: d.Addr, Local: d.Local}
			}
			if err := b.WriteBatch(out); err != nil {
				t.Fatal(err)
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			for i := range n {
				k, from, err := client.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if want := fmt.Sprint("r", i); string(buf[:k]) != want {
					t.Errorf("reply %d = %q, want %q", i, buf[:k], want)
				}
				if want := netip.AddrPortFrom(to, uint16(port)); Canonical(from) != want {
					t.Errorf("reply %d from %v, want %v (the address the query went to)", i, from, want)
				}
			}
		})
	}
}

// TestBatchConnSkipsRefused: a datagram that cannot be sent costs only
// itself; the others of the batch arrive and the error says which failed.
func TestBatchConnSkipsRefused(t *testing.T) {
	srv := listenUDP(t, "udp4", "127.0.0.1:0")
	client := listenUDP(t, "udp4", "127.0.0.1:0")
	b := NewBatchConn(srv)
	to := Canonical(client.LocalAddr().(*net.UDPAddr).AddrPort())
	ds := []Datagram{
		{Buf: []byte("a"), Addr: to},
		{Buf: []byte("v6"), Addr: netip.MustParseAddrPort("[2001:db8::1]:53")}, // not on an IPv4 socket
		{Buf: []byte("b"), Addr: to},
		{Buf: bytes.Repeat([]byte("x"), 70000), Addr: to}, // larger than a datagram can be
		{Buf: []byte("c"), Addr: to},
	}
	err := b.WriteBatch(ds)
	if err == nil {
		t.Fatal("WriteBatch reported no error for two datagrams that cannot be sent")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	for _, want := range []string{"a", "b", "c"} {
		k, _, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("waiting for %q: %v (error was %v)", want, err, err)
		}
		if string(buf[:k]) != want {
			t.Fatalf("got %q, want %q", buf[:k], want)
		}
	}
}

// TestBatchConnClose: closing the socket ends a blocked ReadBatch with
// net.ErrClosed.
func TestBatchConnClose(t *testing.T) {
	srv := listenUDP(t, "udp4", "127.0.0.1:0")
	b := NewBatchConn(srv)
	errc := make(chan error, 1)
	go func() {
		_, err := b.ReadBatch([]Datagram{{Buf: make([]byte, 100)}})
		errc <- err
	}()
	time.AfterFunc(50*time.Millisecond, func() { srv.Close() })
	select {
	case err := <-errc:
		if !IsClosed(err) {
			t.Fatalf("ReadBatch after Close: %v, want a closed-socket error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch still blocked 5 s after Close")
	}
}
