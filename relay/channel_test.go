package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

func TestParseChannelData(t *testing.T) {
	for _, tc := range []struct {
		name    string
		b       []byte
		number  uint16
		payload string
		ok      bool
	}{
		{"exact", []byte{0x40, 0x01, 0, 2, 'h', 'i'}, 0x4001, "hi", true},
		{"padded", []byte{0x40, 0x01, 0, 2, 'h', 'i', 0, 0}, 0x4001, "hi", true},
		{"empty", []byte{0x7f, 0xff, 0, 0}, 0x7fff, "", true},
		{"short header", []byte{0x40, 0x01, 0}, 0, "", false},
		{"length beyond datagram", []byte{0x40, 0x01, 0, 3, 'h', 'i'}, 0, "", false},
		{"number below range", []byte{0x3f, 0xff, 0, 0}, 0, "", false},
		{"number above range", []byte{0x80, 0x00, 0, 0}, 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, p, ok := parseChannelData(tc.b)
			if n != tc.number || string(p) != tc.payload || ok != tc.ok {
				t.Errorf("parseChannelData(%x) = %#x %q %v, want %#x %q %v", tc.b, n, p, ok, tc.number, tc.payload, tc.ok)
			}
		})
	}
}

// channelSetup is a UDP server with client a holding channel 0x4001 to peer.
type channelSetup struct {
	s    *Server
	addr string
	a    *rawClient
	peer *net.UDPConn
	key  allocKey
}

func newChannelSetup(t *testing.T) *channelSetup {
	t.Helper()
	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Peers: loopbackOnly, Logger: quiet}
	addr := serve(t, s, "udp")
	a := dialRaw(t, "udp", addr, "a", "pw")
	if code := a.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	if code := a.channelBind(0x4001, netcore.AddrPort(peer.LocalAddr())); code != 0 {
		t.Fatalf("channel bind: %d", code)
	}
	k := allocKey{client: netcore.AddrPort(a.conn.LocalAddr()), server: netip.MustParseAddrPort(addr)}
	return &channelSetup{s: s, addr: addr, a: a, peer: peer, key: k}
}

// peerRead returns the next datagram the peer gets.
func (cs *channelSetup) peerRead(t *testing.T) (string, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = cs.peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := cs.peer.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	return string(buf[:n]), from
}

// TestChannelDataDropped: ChannelData relays only on the 5-tuple that bound
// the channel, only on a bound channel, and only while the peer holds a
// permission; the other direction likewise. Each refused packet is followed
// by a good one on the same path, which must arrive first: the relay
// handles one socket's datagrams in order.
func TestChannelDataDropped(t *testing.T) {
	cs := newChannelSetup(t)
	s, a := cs.s, cs.a

	a.channelData(0x4001, []byte("bound"))
	if got, _ := cs.peerRead(t); got != "bound" {
		t.Fatalf("peer got %q, want the bound channel's payload", got)
	}

	// An unbound channel number on the owner's 5-tuple.
	a.channelData(0x4002, []byte("unbound"))
	// The same channel number from another 5-tuple: no allocation there,
	// then an allocation of its own that did not bind it.
	b := dialRaw(t, "udp", cs.addr, "b", "pw")
	b.channelData(0x4001, []byte("no allocation"))
	a.channelData(0x4001, []byte("marker 1"))
	if got, _ := cs.peerRead(t); got != "marker 1" {
		t.Fatalf("peer got %q, want marker 1", got)
	}
	if code := b.allocate(); code != 0 {
		t.Fatalf("b allocate: %d", code)
	}
	b.channelData(0x4001, []byte("not b's channel"))
	a.channelData(0x4001, []byte("marker 2"))
	if got, _ := cs.peerRead(t); got != "marker 2" {
		t.Fatalf("peer got %q, want marker 2", got)
	}
	if st := s.Stats(); st.ChannelDrops != 3 {
		t.Errorf("ChannelDrops = %d, want 3", st.ChannelDrops)
	}

	// Peer to client: bound, so ChannelData with the channel's number and
	// the exact length; a peer at another address, without a permission,
	// is dropped (permissions are per IP address).
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	relayed := net.UDPAddrFromAddrPort(a.relayed)
	if _, err := stranger.WriteToUDP([]byte("no permission"), relayed); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.peer.WriteToUDP([]byte("pong"), relayed); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = a.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := a.conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x40, 0x01, 0, 4, 'p', 'o', 'n', 'g'}; !bytes.Equal(buf[:n], want) {
		t.Fatalf("client got %x, want ChannelData %x", buf[:n], want)
	}
	if st := s.Stats(); st.PermissionDrops != 1 {
		t.Errorf("PermissionDrops = %d, want 1", st.PermissionDrops)
	}

	// The permission expires (the engine's event, as its timer sends it)
	// while the channel binding lives on: nothing passes either way. The
	// markers go through the same sockets on a channel to a third peer.
	third, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if code := a.channelBind(0x4003, netcore.AddrPort(third.LocalAddr())); code != 0 {
		t.Fatalf("channel bind: %d", code)
	}
	s.allocs.permission(cs.key, netcore.AddrPort(cs.peer.LocalAddr()).Addr(), false)
	a.channelData(0x4001, []byte("permission expired"))
	a.channelData(0x4003, []byte("marker 3"))
	_ = third.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := third.ReadFrom(buf); err != nil || string(buf[:n]) != "marker 3" {
		t.Fatalf("third peer got %q, %v, want marker 3", buf[:n], err)
	}
	if _, err := cs.peer.WriteToUDP([]byte("permission expired"), relayed); err != nil {
		t.Fatal(err)
	}
	if _, err := third.WriteToUDP([]byte("marker 4"), relayed); err != nil {
		t.Fatal(err)
	}
	if got, err := a.readData(); err != nil || string(got) != "marker 4" {
		t.Fatalf("client got %q, %v, want marker 4", got, err)
	}
	st := s.Stats()
	if st.ChannelDrops != 4 || st.PermissionDrops != 2 {
		t.Errorf("ChannelDrops = %d, PermissionDrops = %d, want 4 and 2", st.ChannelDrops, st.PermissionDrops)
	}
	if u := st.Users["a"]; u.PacketsToPeer != 4 || u.PacketsFromPeer != 2 {
		t.Errorf("a's counters %+v: want 4 packets to the peer, 2 from it", u)
	}
}

// TestChannelDataStream: ChannelData over TCP takes the fast path too,
// padding included, and an unbound channel is dropped there as well.
func TestChannelDataStream(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw"}, Peers: loopbackOnly, Logger: quiet}
	c := dialTransport(t, "tcp", serve(t, s, "tcp"), "a", "pw")
	if code := c.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if code := c.channelBind(0x4001, netcore.AddrPort(peer.LocalAddr())); code != 0 {
		t.Fatalf("channel bind: %d", code)
	}
	c.channelData(0x4002, []byte("unbound"))
	c.channelData(0x4001, []byte("odd"))
	buf := make([]byte, 2048)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := peer.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "odd" {
		t.Fatalf("peer got %q, %v, want the bound channel's payload", buf[:n], err)
	}
	if st := s.Stats(); st.ChannelDrops != 1 {
		t.Errorf("ChannelDrops = %d, want 1", st.ChannelDrops)
	}
	if _, err := peer.WriteToUDP([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	if got, err := c.readStreamData(); err != nil || string(got) != "back" {
		t.Fatalf("client got %q, %v", got, err)
	}
}

// TestChannelDataAllocs: a ChannelData round trip (client → peer → client)
// allocates nothing anywhere in the process.
func TestChannelDataAllocs(t *testing.T) {
	cs := newChannelSetup(t)
	msg := make([]byte, 4+160)
	binary.BigEndian.PutUint16(msg, 0x4001)
	binary.BigEndian.PutUint16(msg[2:], 160)
	buf := make([]byte, 2048)
	_ = cs.peer.SetReadDeadline(time.Time{})
	_ = cs.a.conn.SetReadDeadline(time.Time{})
	round := func() {
		if _, err := cs.a.conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		_, from, err := cs.peer.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.peer.WriteToUDPAddrPort(buf[:160], from); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.a.conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(200, round); n != 0 {
		t.Errorf("%v allocations per ChannelData round trip, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { cs.s.relayChannelData(msg, cs.key) }); n != 0 {
		t.Errorf("relayChannelData: %v allocations, want 0", n)
	}
}

// TestChannelDataInProcess: ChannelData between two allocations of one
// relay reaches the other client as ChannelData on its own channel number,
// straight from the first client's datagram; without a channel on the
// receiving side it arrives as a Data indication, and without a permission
// there not at all.
func TestChannelDataInProcess(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Public: netip.MustParseAddr("203.0.113.7"), Logger: quiet}
	addr := serve(t, s, "udp")
	a := dialRaw(t, "udp", addr, "a", "pw")
	b := dialRaw(t, "udp", addr, "b", "pw")
	if a.allocate() != 0 || b.allocate() != 0 {
		t.Fatal("allocate failed")
	}
	if code := a.channelBind(0x4001, b.relayed); code != 0 {
		t.Fatalf("a's channel bind: %d", code)
	}
	// b holds no permission for a's relayed address yet: dropped.
	a.channelData(0x4001, []byte("no permission at b"))
	// A permission but no channel: a Data indication from a's address.
	if code := b.permit(a.relayed); code != 0 {
		t.Fatalf("b's permission: %d", code)
	}
	a.channelData(0x4001, []byte("as Data indication"))
	if got, err := b.readData(); err != nil || string(got) != "as Data indication" {
		t.Fatalf("b got %q, %v", got, err)
	}
	if st := s.Stats(); st.PermissionDrops != 1 {
		t.Errorf("PermissionDrops = %d, want 1", st.PermissionDrops)
	}
	if code := b.channelBind(0x4321, a.relayed); code != 0 {
		t.Fatalf("b's channel bind: %d", code)
	}
	a.channelData(0x4001, []byte("hello b"))
	buf := make([]byte, 2048)
	_ = b.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := b.conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{0x43, 0x21, 0, 7}, "hello b"...); !bytes.Equal(buf[:n], want) {
		t.Fatalf("b got %x, want ChannelData %x", buf[:n], want)
	}
	b.channelData(0x4321, []byte("hello a"))
	if got, err := a.readData(); err != nil || string(got) != "hello a" {
		t.Fatalf("a got %q, %v", got, err)
	}
	st := s.Stats()
	if st.InProcess != 4 || st.Users["a"].PacketsToPeer != 3 || st.Users["b"].PacketsFromPeer != 2 ||
		st.Users["a"].PacketsFromPeer != 1 {
		t.Errorf("stats %+v: want 4 in process, a 3 to and 1 from its peer, b 2 from its peer", st)
	}
}
