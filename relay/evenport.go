package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// An Allocate with EVEN-PORT (R bit) asks for an even relay port and that
// the next port be reserved for a second allocation, which claims it with
// the RESERVATION-TOKEN of the first (RFC 8656 section 7.2, steps 5 and 6;
// RTP and RTCP on adjacent ports). The engine remembers only the token and
// the port: nothing holds port+1, so any socket of the host (an ephemeral
// port of some client; the Linux ephemeral range overlaps the relay's) can
// take it first and the second Allocate then fails with 508. coturn holds
// the reserved socket; so does the relay, in pairs:
//
//   - The engine asks for an even port (the one it probed free) for an
//     EVEN-PORT request; the relay binds it and port+1 together, trying
//     other even ports of the range when either is taken. The engine
//     reserves the port the relay returns, so the pair stays consistent.
//   - The odd port is held for as long as the engine keeps the token, and
//     handed over as is when the engine asks for exactly that port.
//   - At most maxHeldPorts are held at once (each held port belongs to a
//     successful allocation, but allocations can be made and deleted in a
//     loop); beyond that an even port is allocated alone, as before.

// reservationLifetime is how long the engine keeps a reservation token
// (pion/turn: 30 s after the Allocate that made it).
const reservationLifetime = 30 * time.Second

// maxHeldPorts bounds the reserved ports held at once.
const maxHeldPorts = 1024

type heldPort struct {
	uc    *net.UDPConn
	timer *time.Timer
}

// heldPorts holds the odd port of each reserved pair by bound address.
type heldPorts struct {
	mu     sync.Mutex
	ports  map[netip.AddrPort]*heldPort
	closed bool
	max    int // 0 means maxHeldPorts (tests set fewer)
}

// hold keeps uc, bound to ap, for lifetime; false if the table is full or
// closed (the caller keeps uc then).
func (h *heldPorts) hold(ap netip.AddrPort, uc *net.UDPConn, lifetime time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	limit := h.max
	if limit == 0 {
		limit = maxHeldPorts
	}
	if h.closed || len(h.ports) >= limit || h.ports[ap] != nil {
		return false
	}
	if h.ports == nil {
		h.ports = make(map[netip.AddrPort]*heldPort)
	}
	hp := &heldPort{uc: uc}
	hp.timer = time.AfterFunc(lifetime, func() {
		h.mu.Lock()
		if h.ports[ap] == hp {
			delete(h.ports, ap)
			uc.Close()
		}
		h.mu.Unlock()
	})
	h.ports[ap] = hp
	return true
}

// take returns the socket held for ap, which is no longer held, or nil.
func (h *heldPorts) take(ap netip.AddrPort) *net.UDPConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	hp := h.ports[ap]
	if hp == nil {
		return nil
	}
	delete(h.ports, ap)
	hp.timer.Stop()
	return hp.uc
}

func (h *heldPorts) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ports)
}

// closeAll releases every held port; later holds are refused.
func (h *heldPorts) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, hp := range h.ports {
		hp.timer.Stop()
		hp.uc.Close()
	}
	clear(h.ports)
}

// pairCandidates lists the even ports to try for a reserved pair: the one
// the engine asked for first, then even ports of the range spread from a
// random start. Each has its odd neighbour inside the range.
func (g *relayGen) pairCandidates(first uint16) []uint16 {
	lo, hi := g.s.RelayPorts.bounds()
	out := make([]uint16, 0, relayPortTries+1)
	if first%2 == 0 && first >= lo && first < hi {
		out = append(out, first)
	}
	elo := lo + lo%2 // first even port of the range
	if elo >= hi {
		return out
	}
	// The even ports whose +1 is in range, as indexes.
	for _, i := range spread((int(hi)-int(elo)-1)/2+1, relayPortTries) {
		if p := elo + 2*uint16(i); p != first {
			out = append(out, p)
		}
	}
	return out
}

// bindPair binds an even port and the odd port after it, for an EVEN-PORT
// request that asked for first. It returns the even port's socket and
// holds the odd one; ok is false when no candidate pair was free.
func (g *relayGen) bindPair(network string, bind netip.Addr, first uint16) (uc *net.UDPConn, port uint16, ok bool) {
	for _, p := range g.pairCandidates(first) {
		even, err := g.s.listenRelay(network, netip.AddrPortFrom(bind, p))
		if err != nil {
			continue
		}
		if g.s.reg.get(p) != nil { // ours already (as advertised)
			even.Close()
			continue
		}
		odd, err := g.s.listenRelay(network, netip.AddrPortFrom(bind, p+1))
		if err != nil || g.s.reg.get(p+1) != nil {
			if odd != nil {
				odd.Close()
			}
			even.Close()
			continue
		}
		if !g.s.held.hold(netip.AddrPortFrom(bind, p+1), odd, reservationLifetime) {
			odd.Close() // full: the even port alone, as without a reservation
		}
		return even, p, true
	}
	return nil, 0, false
}
