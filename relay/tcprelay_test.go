package relay

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

var tcpTransport = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{6, 0, 0, 0}}

// freeTCPPort returns a port the kernel just handed out and took back.
func freeTCPPort(t testing.TB) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return netcore.AddrPort(l.Addr()).Port()
}

// allocateTCP makes an RFC 6062 TCP allocation on c and returns its code.
func (c *rawClient) allocateTCP() int {
	c.t.Helper()
	res, code := c.do(stun.MethodAllocate, tcpTransport)
	if code == 0 {
		var r stun.XORMappedAddress
		if err := r.GetFromAs(res, stun.AttrXORRelayedAddress); err == nil {
			a, _ := netip.AddrFromSlice(r.IP)
			c.relayed = netip.AddrPortFrom(a.Unmap(), uint16(r.Port))
		}
	}
	return code
}

// connectionAttempts counts the ConnectionAttempt indications c receives
// until nothing arrives for quiet.
func (c *rawClient) connectionAttempts(quiet time.Duration) int {
	c.timeout = quiet
	defer func() { c.timeout = 0 }()
	n := 0
	for {
		m, err := c.read()
		if err != nil {
			return n
		}
		if m.Type == stun.NewType(stun.MethodConnectionAttempt, stun.ClassIndication) {
			n++
		}
	}
}

// TestTCPRelayAddressHasOneOwner: a relayed transport address belongs to
// exactly one allocation. With SO_REUSEPORT on the relay listeners, a second
// user's allocation could bind the victim's relay port, and the kernel then
// handed it part of the peer connections meant for the victim (RFC 6062
// ConnectionAttempt, then ConnectionBind, then the victim's data).
func TestTCPRelayAddressHasOneOwner(t *testing.T) {
	port := freeTCPPort(t)
	s := &Server{Users: map[string]string{"victim": "pw", "mallory": "pw"}, Peers: loopbackOnly,
		RelayPorts: PortRange{Min: port, Max: port}}
	addr := serve(t, s, "tcp")
	victim := dialRaw(t, "tcp", addr, "victim", "pw")
	if code := victim.allocateTCP(); code != 0 {
		t.Fatalf("victim's TCP allocation: %d", code)
	}
	mallory := dialRaw(t, "tcp", addr, "mallory", "pw")
	code := mallory.allocateTCP()
	if code == 0 && mallory.relayed.Port() == victim.relayed.Port() {
		t.Errorf("second user got the victim's relay port %d", port)
	} else if code != 0 && code != 508 {
		t.Errorf("second allocation with the only port taken: %d, want 508", code)
	}
	// Peer connections to the victim's relayed address reach the victim only.
	if code := victim.permit(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1)); code != 0 {
		t.Fatalf("victim's permission: %d", code)
	}
	if code == 0 {
		if code := mallory.permit(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1)); code != 0 {
			t.Fatalf("mallory's permission: %d", code)
		}
	}
	const conns = 20
	for range conns {
		pc, err := net.Dial("tcp", victim.relayed.String())
		if err != nil {
			t.Fatalf("peer dial %s: %v", victim.relayed, err)
		}
		defer pc.Close()
	}
	if got := mallory.connectionAttempts(300 * time.Millisecond); got != 0 {
		t.Errorf("%d of %d peer connections to the victim's address were announced to another user", got, conns)
	}
	if got := victim.connectionAttempts(time.Second); got != conns {
		t.Errorf("victim was told of %d of %d peer connections", got, conns)
	}
}

// TestConnectionBindNeedsCredentials: a ConnectionBind without credentials
// (or naming no live connection) must not switch a TCP connection to raw
// data: before the fix, one such request turned the filter off for the rest
// of the connection, so password guesses went unbudgeted and permissions past
// the per-allocation cap were granted.
func TestConnectionBindNeedsCredentials(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw"}, Peers: loopbackOnly,
		Limits: Limits{PermissionsPerAllocation: 2}}
	addr := serve(t, s, "tcp")
	c := dialRaw(t, "tcp", addr, "a", "pw")
	if code := c.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	bind := func(withCredentials bool) int {
		m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodConnectionBind, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrConnectionID, Value: []byte{0, 0, 0, 42}}, stun.Fingerprint)
		if withCredentials {
			m = stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodConnectionBind, stun.ClassRequest),
				stun.RawAttribute{Type: stun.AttrConnectionID, Value: []byte{0, 0, 0, 42}},
				stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce), stun.MessageIntegrity(c.key), stun.Fingerprint)
		}
		if _, err := c.conn.Write(m.Raw); err != nil {
			t.Fatal(err)
		}
		for {
			res, err := c.read()
			if err != nil {
				t.Fatalf("ConnectionBind: %v", err)
			}
			if res.TransactionID != m.TransactionID {
				continue
			}
			var ec stun.ErrorCodeAttribute
			if ec.GetFrom(res) != nil {
				return 0
			}
			return int(ec.Code)
		}
	}
	if code := bind(false); code != 401 {
		t.Fatalf("ConnectionBind without credentials: %d, want 401", code)
	}
	if code := bind(true); code != 400 {
		t.Fatalf("ConnectionBind naming no connection: %d, want 400", code)
	}
	p := func(i int) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}), 9) }
	if c.permit(p(1)) != 0 || c.permit(p(2)) != 0 {
		t.Fatal("permissions within the cap refused")
	}
	if code := c.permit(p(3)); code != 508 {
		t.Errorf("third permission after a failed ConnectionBind: %d, want 508 (filter still on)", code)
	}
	before := s.Stats().AuthFailures
	wrong := *c
	wrong.pass = "guess"
	if _, code := wrong.do(stun.MethodRefresh); code != 401 {
		t.Errorf("wrong password: %d, want 401", code)
	}
	if got := s.Stats().AuthFailures; got != before+1 {
		t.Errorf("AuthFailures %d after a wrong password, want %d (checked by the filter)", got, before+1)
	}
}

// TestConnectionBindRelaysData: the RFC 6062 path end to end. A peer
// connects to the relayed address, the client hears of it, binds a new data
// connection with its credentials, and bytes flow both ways unframed.
func TestConnectionBindRelaysData(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw"}, Peers: loopbackOnly}
	addr := serve(t, s, "tcp")
	ctl := dialRaw(t, "tcp", addr, "a", "pw")
	if code := ctl.allocateTCP(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	if code := ctl.permit(netip.MustParseAddrPort("127.0.0.1:1")); code != 0 {
		t.Fatalf("permit: %d", code)
	}
	peer, err := net.Dial("tcp", ctl.relayed.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	m, err := ctl.read()
	if err != nil || m.Type != stun.NewType(stun.MethodConnectionAttempt, stun.ClassIndication) {
		t.Fatalf("want ConnectionAttempt, got %v, %v", m, err)
	}
	id, err := m.Get(stun.AttrConnectionID)
	if err != nil {
		t.Fatal(err)
	}
	data := dialRaw(t, "tcp", addr, "a", "pw")
	if _, code := data.do(stun.MethodConnectionBind, stun.RawAttribute{Type: stun.AttrConnectionID, Value: id}); code != 0 {
		t.Fatalf("ConnectionBind: %d", code)
	}
	if _, err := data.conn.Write([]byte("to peer")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := io.ReadAtLeast(peer, buf, 7); err != nil || string(buf[:n]) != "to peer" {
		t.Fatalf("peer got %q, %v", buf[:n], err)
	}
	if _, err := peer.Write([]byte("to client")); err != nil {
		t.Fatal(err)
	}
	_ = data.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := io.ReadAtLeast(data.conn, buf, 9); err != nil || string(buf[:n]) != "to client" {
		t.Fatalf("client got %q, %v", buf[:n], err)
	}
}

// TestHandshakeTimeoutNegativeRemovesLimit: Limits documents "a negative
// value removes that limit"; HandshakeTimeout -1 used to set a deadline of
// now, closing every TCP and TLS connection at once.
func TestHandshakeTimeoutNegativeRemovesLimit(t *testing.T) {
	s := &Server{Limits: Limits{HandshakeTimeout: -1}}
	c := dialRaw(t, "tcp", serve(t, s, "tcp"), "", "")
	if _, code := c.do(stun.MethodBinding); code != 0 {
		t.Fatalf("binding: %d", code)
	}
}
