package relay

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/pion/stun/v3"
)

var evenPortR = stun.RawAttribute{Type: stun.AttrEvenPort, Value: []byte{0x80}}

// allocatePair makes the RTP allocation with EVEN-PORT (R) from one local
// port and the RTCP one with its RESERVATION-TOKEN from another, as
// turnutils_uclient does, and returns both relayed ports.
func allocatePair(t *testing.T, addr string, between func(rtp uint16)) (rtp, rtcp uint16) {
	t.Helper()
	a := dialRaw(t, "udp", addr, "alice", "pw")
	res, code := a.allocateWith(evenPortR)
	if code != 0 {
		t.Fatalf("EVEN-PORT allocate: %d", code)
	}
	rtp = a.relayed.Port()
	token, err := res.Get(stun.AttrReservationToken)
	if err != nil || len(token) != 8 {
		t.Fatalf("no RESERVATION-TOKEN: %v", err)
	}
	if between != nil {
		between(rtp)
	}
	b := dialRaw(t, "udp", addr, "alice", "pw")
	if _, code := b.allocateWith(stun.RawAttribute{Type: stun.AttrReservationToken, Value: token}); code != 0 {
		t.Fatalf("RESERVATION-TOKEN allocate (RTP on %d): %d", rtp, code)
	}
	return rtp, b.relayed.Port()
}

// TestEvenPortReservation: the port after an EVEN-PORT allocation's is held
// until its RESERVATION-TOKEN claims it, so a socket that comes in between
// (here the test's own, standing for any ephemeral port of the host) cannot
// take it, and the second allocation gets exactly that port.
func TestEvenPortReservation(t *testing.T) {
	s := &Server{Users: map[string]string{"alice": "pw"}, Peers: loopbackOnly}
	addr := serve(t, s, "udp")
	rtp, rtcp := allocatePair(t, addr, func(rtp uint16) {
		if rtp%2 != 0 {
			t.Fatalf("EVEN-PORT gave odd port %d", rtp)
		}
		if st := s.Stats(); st.RelayPortsInUse != 2 {
			t.Errorf("ports in use with a reservation: %d, want 2", st.RelayPortsInUse)
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(rtp)+1)))
		if err == nil {
			pc.Close()
			t.Errorf("port %d was free after the reservation", rtp+1)
		}
	})
	if rtcp != rtp+1 {
		t.Fatalf("RTCP on %d, want %d", rtcp, rtp+1)
	}
	if st := s.Stats(); st.RelayPortsInUse != 2 || st.Allocations != 2 {
		t.Errorf("after the claim: %d ports, %d allocations, want 2, 2", st.RelayPortsInUse, st.Allocations)
	}
}

// TestEvenPortSkipsTakenNeighbour: when the odd neighbour of the even port
// the engine probed is taken by another socket, the relay chooses another
// even port whose neighbour is free, instead of answering the RTCP
// allocation 508 later. The range has four ports, base+1 taken: the only
// pair left is base+2, base+3; the engine's probe picks base or base+2 at
// random, so a few rounds show it.
func TestEvenPortSkipsTakenNeighbour(t *testing.T) {
	base, taken := fourPorts(t)
	defer taken.Close()
	for range 6 {
		s := &Server{Users: map[string]string{"alice": "pw"}, Peers: loopbackOnly,
			RelayPorts: PortRange{Min: base, Max: base + 3}}
		rtp, rtcp := allocatePair(t, serve(t, s, "udp"), nil)
		if rtp != base+2 || rtcp != base+3 {
			t.Fatalf("pair %d/%d, want %d/%d", rtp, rtcp, base+2, base+3)
		}
		s.Close()
	}
}

// fourPorts finds an even base whose four ports the test can bind on
// 127.0.0.1, and keeps base+1 bound (the others are released for the relay).
func fourPorts(t *testing.T) (uint16, net.PacketConn) {
	t.Helper()
	for try := 0; try < 50; try++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := netcore.AddrPort(pc.LocalAddr()).Port()
		pc.Close()
		base := p &^ 1
		if base < 1024 || base > 65530 {
			continue
		}
		var held []net.PacketConn
		for i := uint16(0); i < 4; i++ {
			c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(base+i))))
			if err != nil {
				break
			}
			held = append(held, c)
		}
		if len(held) == 4 {
			held[0].Close()
			held[2].Close()
			held[3].Close()
			return base, held[1]
		}
		for _, c := range held {
			c.Close()
		}
	}
	t.Fatal("no four free ports in a row")
	return 0, nil
}

// TestHeldPorts: a held port is released when its reservation lapses, by
// closeAll (Close, Shutdown), and the table holds at most its limit.
func TestHeldPorts(t *testing.T) {
	bind := func() (*net.UDPConn, netip.AddrPort) {
		uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return uc, netcore.AddrPort(uc.LocalAddr())
	}
	free := func(ap netip.AddrPort) bool {
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return false
		}
		uc.Close()
		return true
	}
	h := heldPorts{max: 8}
	uc, ap := bind()
	if !h.hold(ap, uc, 20*time.Millisecond) {
		t.Fatal("hold refused")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !free(ap) {
		if time.Now().After(deadline) {
			t.Fatal("the lapsed reservation still holds its port")
		}
		time.Sleep(5 * time.Millisecond) // polling for the timer's effect
	}
	if h.count() != 0 || h.take(ap) != nil {
		t.Error("a lapsed reservation is still in the table")
	}

	uc, ap = bind()
	h.hold(ap, uc, time.Hour)
	if got := h.take(ap); got != uc || h.count() != 0 {
		t.Fatalf("take: %v, %d left", got, h.count())
	}
	uc.Close()

	var extra []*net.UDPConn
	defer func() {
		for _, c := range extra {
			c.Close()
		}
	}()
	for i := 0; i < h.max; i++ {
		uc, ap := bind()
		if !h.hold(ap, uc, time.Hour) {
			uc.Close()
			t.Fatalf("hold %d refused", i)
		}
	}
	uc, ap = bind()
	extra = append(extra, uc)
	if h.hold(ap, uc, time.Hour) {
		t.Fatalf("held %d ports, limit %d", h.count(), h.max)
	}
	first := netip.AddrPort{}
	for a := range h.ports {
		first = a
		break
	}
	h.closeAll()
	if h.count() != 0 || !free(first) {
		t.Error("closeAll kept a port")
	}
	uc, ap = bind()
	extra = append(extra, uc)
	if h.hold(ap, uc, time.Hour) {
		t.Error("hold after closeAll")
	}
}

// TestEvenPortHoldsBounded: clients that make EVEN-PORT allocations and
// delete them at once, from one source and then from many, leave reserved
// ports behind (the token outlives the allocation); the held ports stay at
// the table's bound and a legitimate client still gets its pair.
func TestEvenPortHoldsBounded(t *testing.T) {
	s := &Server{Users: map[string]string{"alice": "pw", "mallory": "pw"}, Peers: loopbackOnly}
	s.held.max = 8
	addr := serve(t, s, "udp")
	churn := func(src string, rounds int) {
		m := dialRawFrom(t, src, addr, "mallory", "pw")
		for range rounds {
			if _, code := m.allocateWith(evenPortR); code != 0 {
				t.Fatalf("%s: EVEN-PORT allocate: %d", src, code)
			}
			if _, code := m.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); code != 0 {
				t.Fatalf("%s: delete: %d", src, code)
			}
			if n := s.held.count(); n > s.held.max {
				t.Fatalf("%d ports held, bound %d", n, s.held.max)
			}
		}
	}
	churn("127.0.0.2", 20)
	for i := 3; i < 11; i++ {
		churn("127.0.0."+strconv.Itoa(i), 3)
	}
	if n := s.held.count(); n != s.held.max {
		t.Errorf("%d ports held after the churn, want the bound %d", n, s.held.max)
	}
	if st := s.Stats(); st.Allocations != 0 || st.RelayPortsInUse != uint64(s.held.max) {
		t.Errorf("after the churn: %d allocations, %d ports in use", st.Allocations, st.RelayPortsInUse)
	}
	rtp, rtcp := allocatePair(t, addr, nil)
	if rtcp != rtp+1 || rtp%2 != 0 {
		t.Fatalf("legitimate pair %d/%d", rtp, rtcp)
	}
}
