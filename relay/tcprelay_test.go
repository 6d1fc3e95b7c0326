package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
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
	return addrPortOf(l.Addr()).Port()
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
