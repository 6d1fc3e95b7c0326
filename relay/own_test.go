package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// waitDenials waits until s counted more peer denials than before.
func waitDenials(t *testing.T, s *Server, before uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().PeerDenials == before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return s.Stats().PeerDenials
}

// TestOwnAddressesRefused: with a peer allow-list that covers the server's
// own addresses (loopback here), ChannelBind, Send and Connect to the
// server's listening addresses (UDP and TCP, bound or wildcard) and to its
// TCP relayed addresses are refused with 403; another allocation's UDP
// relayed address stays reachable (relayed in process), and so does an
// ordinary allowed peer.
func TestOwnAddressesRefused(t *testing.T) {
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAddr := netcore.AddrPort(peer.LocalAddr())

	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Peers: loopbackOnly}
	udpAddr := netip.MustParseAddrPort(serve(t, s, "udp"))
	tcpAddr := netip.MustParseAddrPort(serve(t, s, "tcp"))
	// A wildcard listener: every host address with its port is ours.
	wl, err := net.ListenPacket("udp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	wildcard := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), netcore.AddrPort(wl.LocalAddr()).Port())
	errc := make(chan error, 1)
	go func() { errc <- s.ServePacket(wl) }()
	t.Cleanup(func() { s.Close(); <-errc })

	a := dialRaw(t, "udp", udpAddr.String(), "a", "pw")
	if code := a.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	b := dialRaw(t, "udp", udpAddr.String(), "b", "pw")
	if code := b.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	bt := dialRaw(t, "tcp", tcpAddr.String(), "b", "pw")
	if code := bt.allocateTCP(); code != 0 {
		t.Fatalf("TCP allocate: %d", code)
	}
	at := dialRaw(t, "tcp", tcpAddr.String(), "a", "pw")
	if code := at.allocateTCP(); code != 0 {
		t.Fatalf("TCP allocate: %d", code)
	}

	own := map[string]netip.AddrPort{
		"UDP listener":      udpAddr,
		"TCP listener":      tcpAddr,
		"wildcard listener": wildcard,
		"TCP relayed":       bt.relayed,
	}
	ch := uint16(0x4000)
	for name, ap := range own {
		t.Run(name, func(t *testing.T) {
			ch++
			if code := a.channelBind(ch, ap); code != 403 {
				t.Errorf("ChannelBind %s: got %d, want 403", ap, code)
			}
			before := s.Stats().PeerDenials
			a.send(ap, []byte("loop"))
			if got := waitDenials(t, s, before); got != before+1 {
				t.Errorf("Send %s: denials %d, want %d", ap, got, before+1)
			}
			if _, code := at.do(stun.MethodConnect, peerAttr(ap)); code != 403 {
				t.Errorf("Connect %s: got %d, want 403", ap, code)
			}
		})
	}

	// The controls: a real peer and another allocation's UDP relayed
	// address are still served.
	if code := a.channelBind(0x4100, peerAddr); code != 0 {
		t.Fatalf("ChannelBind to an allowed peer: %d", code)
	}
	a.channelData(0x4100, []byte("to peer"))
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := peer.ReadFrom(buf); err != nil || string(buf[:n]) != "to peer" {
		t.Fatalf("peer got %q, %v", buf[:n], err)
	}
	if code := a.channelBind(0x4101, b.relayed); code != 0 {
		t.Fatalf("ChannelBind to another allocation's relayed address: %d", code)
	}
	if code := b.permit(a.relayed); code != 0 {
		t.Fatalf("permission: %d", code)
	}
	a.channelData(0x4101, []byte("in process"))
	if got, err := b.readData(); err != nil || string(got) != "in process" {
		t.Fatalf("b got %q, %v", got, err)
	}
}

// TestPermissionToOwnSocketRefused: with a peer allow-list that covers the
// server's own address (loopback), a client asking for a permission to one
// of the server's own sockets gets 403: its UDP, TCP and wildcard listening
// addresses, the public address at a listener's port, a TCP relayed address
// (as advertised and as bound), and a UDP relay socket under its bound
// address when it advertises another one (the public address). ChannelBind,
// Send and Connect to that bound relay address are refused as well. The
// controls: a loopback peer the server does not own is permitted and gets
// data, and another allocation's UDP relayed address as advertised is
// permitted and relayed in process.
func TestPermissionToOwnSocketRefused(t *testing.T) {
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAddr := netcore.AddrPort(peer.LocalAddr())

	public := netip.MustParseAddr("203.0.113.9")
	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Peers: loopbackOnly, Public: public}
	udpAddr := netip.MustParseAddrPort(serve(t, s, "udp"))
	tcpAddr := netip.MustParseAddrPort(serve(t, s, "tcp"))
	wl, err := net.ListenPacket("udp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	wildcard := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), netcore.AddrPort(wl.LocalAddr()).Port())
	errc := make(chan error, 1)
	go func() { errc <- s.ServePacket(wl) }()
	t.Cleanup(func() { s.Close(); <-errc })

	a := dialRaw(t, "udp", udpAddr.String(), "a", "pw")
	if code := a.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	b := dialRaw(t, "udp", udpAddr.String(), "b", "pw")
	if code := b.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	if b.relayed.Addr() != public {
		t.Fatalf("relayed %s, want the public address %s", b.relayed, public)
	}
	// b's relay socket is bound to the listener's address, 127.0.0.1.
	bBound := netip.AddrPortFrom(udpAddr.Addr(), b.relayed.Port())
	bt := dialRaw(t, "tcp", tcpAddr.String(), "b", "pw")
	if code := bt.allocateTCP(); code != 0 {
		t.Fatalf("TCP allocate: %d", code)
	}
	at := dialRaw(t, "tcp", tcpAddr.String(), "a", "pw")
	if code := at.allocateTCP(); code != 0 {
		t.Fatalf("TCP allocate: %d", code)
	}

	own := []struct {
		name string
		ap   netip.AddrPort
	}{
		{"UDP listener", udpAddr},
		{"TCP listener", tcpAddr},
		{"wildcard listener", wildcard},
		{"public address at the listener port", netip.AddrPortFrom(public, udpAddr.Port())},
		{"TCP relayed as advertised", bt.relayed},
		{"TCP relayed as bound", netip.AddrPortFrom(tcpAddr.Addr(), bt.relayed.Port())},
		{"UDP relay socket as bound", bBound},
	}
	for _, tc := range own {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			if code := a.permit(tc.ap); code != 403 {
				t.Errorf("CreatePermission %s: got %d, want 403", tc.ap, code)
			}
			if code := at.permit(tc.ap); code != 403 {
				t.Errorf("CreatePermission %s on a TCP allocation: got %d, want 403", tc.ap, code)
			}
			after := s.Stats()
			if after.OwnDenials != before.OwnDenials+2 || after.PeerDenials != before.PeerDenials+2 {
				t.Errorf("OwnDenials %d -> %d, PeerDenials %d -> %d; want both +2",
					before.OwnDenials, after.OwnDenials, before.PeerDenials, after.PeerDenials)
			}
		})
	}

	t.Run("UDP relay socket as bound: ChannelBind, Send, Connect", func(t *testing.T) {
		if code := a.channelBind(0x4200, bBound); code != 403 {
			t.Errorf("ChannelBind %s: got %d, want 403", bBound, code)
		}
		before := s.Stats().PeerDenials
		a.send(bBound, []byte("loop"))
		if got := waitDenials(t, s, before); got != before+1 {
			t.Errorf("Send %s: denials %d, want %d", bBound, got, before+1)
		}
		if _, code := at.do(stun.MethodConnect, peerAttr(bBound)); code != 403 {
			t.Errorf("Connect %s: got %d, want 403", bBound, code)
		}
	})

	// Controls: a loopback peer the server does not own, and b's relayed
	// address as advertised (in process).
	if code := a.permit(peerAddr); code != 0 {
		t.Fatalf("CreatePermission to a loopback peer: %d", code)
	}
	if code := a.channelBind(0x4300, peerAddr); code != 0 {
		t.Fatalf("ChannelBind to a loopback peer: %d", code)
	}
	a.channelData(0x4300, []byte("to peer"))
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := peer.ReadFrom(buf); err != nil || string(buf[:n]) != "to peer" {
		t.Fatalf("peer got %q, %v", buf[:n], err)
	}
	if code := a.permit(b.relayed); code != 0 {
		t.Fatalf("CreatePermission to another allocation's relayed address: %d", code)
	}
	if code := b.permit(a.relayed); code != 0 {
		t.Fatalf("CreatePermission back: %d", code)
	}
	a.send(b.relayed, []byte("in process"))
	if got, err := b.readData(); err != nil || string(got) != "in process" {
		t.Fatalf("b got %q, %v", got, err)
	}
}

// TestWildcardRelaySocketRefused: a UDP relay socket bound to the wildcard
// address is reached through every address of the host: under loopback and
// the host's interface addresses (all allowed by the policy here) it is
// refused as our own, and only its advertised address, relayed in process,
// is permitted.
func TestWildcardRelaySocketRefused(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	var hostAddr netip.Addr
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range addrs {
			if n, ok := ia.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap().Is4() && !a.IsLoopback() {
					hostAddr = a.Unmap()
					allow = append(allow, netip.PrefixFrom(hostAddr, 32))
					break
				}
			}
		}
	}
	public := netip.MustParseAddr("203.0.113.9")
	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Peers: PeerPolicy{Allow: allow},
		Public: public, RelayAddr: netip.IPv4Unspecified()}
	addr := serve(t, s, "udp")
	a := dialRaw(t, "udp", addr, "a", "pw")
	if code := a.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	b := dialRaw(t, "udp", addr, "b", "pw")
	if code := b.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	aliases := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.relayed.Port())}
	if hostAddr.IsValid() {
		aliases = append(aliases, netip.AddrPortFrom(hostAddr, b.relayed.Port()))
	} else {
		t.Log("no non-loopback IPv4 interface address: checked the loopback alias only")
	}
	for i, ap := range aliases {
		if code := a.permit(ap); code != 403 {
			t.Errorf("CreatePermission %s: got %d, want 403", ap, code)
		}
		if code := a.channelBind(0x4000+uint16(i), ap); code != 403 {
			t.Errorf("ChannelBind %s: got %d, want 403", ap, code)
		}
	}
	if got := s.Stats().OwnDenials; got != uint64(2*len(aliases)) {
		t.Errorf("OwnDenials %d, want %d", got, 2*len(aliases))
	}
	if code := a.channelBind(0x4100, b.relayed); code != 0 {
		t.Fatalf("ChannelBind to b's advertised relayed address: %d", code)
	}
	if code := b.permit(a.relayed); code != 0 {
		t.Fatalf("permission: %d", code)
	}
	a.channelData(0x4100, []byte("in process"))
	if got, err := b.readData(); err != nil || string(got) != "in process" {
		t.Fatalf("b got %q, %v", got, err)
	}
}
