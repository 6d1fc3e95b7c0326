package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-reuseport"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// TestSteerBySourceKeepsAHostOnOneSocket: datagrams from many ports of one
// IP address all reach the same socket of the group, and the socket is the
// one the program names (address mod n).
func TestSteerBySourceKeepsAHostOnOneSocket(t *testing.T) {
	const n = 4
	var socks []net.PacketConn
	addr := "127.0.0.1:0"
	for i := range n {
		pc, err := reuseport.ListenPacket("udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		if i == 0 {
			addr = pc.LocalAddr().String()
		}
		socks = append(socks, pc)
	}
	if err := steerBySource(socks[0], n); err != nil {
		t.Fatal(err)
	}
	got := make(chan [2]int, 64) // {socket index, last byte of source}
	for i, pc := range socks {
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				got <- [2]int{i, int(netcore.AddrPort(from).Addr().As4()[3])}
			}
		}()
	}
	const perSource = 8
	sources := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.6"}
	for _, src := range sources {
		for range perSource { // a new local port each time
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	seen := map[int]map[int]bool{}
	timeout := time.After(5 * time.Second)
	for range len(sources) * perSource {
		select {
		case g := <-got:
			if seen[g[1]] == nil {
				seen[g[1]] = map[int]bool{}
			}
			seen[g[1]][g[0]] = true
		case <-timeout:
			t.Fatal("datagrams lost on loopback")
		}
	}
	for last, socksSeen := range seen {
		// 127.0.0.x as a big-endian word is 0x7f0000xx; mod 4 is x mod 4.
		want := last % n
		if len(socksSeen) != 1 || !socksSeen[want] {
			t.Errorf("source 127.0.0.%d reached sockets %v, want only %d", last, socksSeen, want)
		}
	}
}
