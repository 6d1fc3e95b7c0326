package nat

import (
	"net/netip"
	"time"
)

// A PCP or NAT-PMP router puts its epoch, the seconds since it last lost its
// mappings, in every reply. A client compares it with its own clock; when the
// router's clock went back, or ran at another pace than the client's, the
// router restarted (or lost its state) and every mapping it held is gone.
// RFC 6887 §8.5 and RFC 6886 §3.6 then require the client to renew all its
// mappings at once rather than at their next renewal, which may be half an
// hour away.

// epochObservation is the last epoch a router sent, and when.
type epochObservation struct {
	gateway netip.Addr
	server  uint32
	client  time.Time
}

// epochValid reports whether an epoch server, received clientDelta after an
// epoch prev, continues prev: time must not go back by more than a second,
// and the router's seconds must advance with the client's within 1/16 and
// two seconds of slack (RFC 6887 §8.5).
func epochValid(prev, server uint32, clientDelta time.Duration) bool {
	if server+1 < prev {
		return false
	}
	if server < prev {
		return true // one second back: rounding
	}
	sd := int64(server - prev)
	cd := int64(clientDelta / time.Second)
	if cd+2 < sd-sd/16 {
		return false
	}
	if sd+2 < cd-cd/16 {
		return false
	}
	return true
}

// observeEpoch records the epoch of a reply from gw with protocol p. When it
// shows that the router lost its state, every mapping made with p is renewed
// at once: the renewal loop is woken with their renewal times set to now.
func (m *PortMapper) observeEpoch(p PortMapProtocol, gw netip.Addr, epoch uint32) {
	now := m.clock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.epochs == nil {
		m.epochs = make(map[PortMapProtocol]epochObservation)
	}
	prev, seen := m.epochs[p]
	m.epochs[p] = epochObservation{gateway: gw, server: epoch, client: now}
	if !seen || prev.gateway != gw || epochValid(prev.server, epoch, now.Sub(prev.client)) {
		return
	}
	m.epochResets++
	renew := 0
	for _, st := range m.maps {
		if st.got.Protocol == p && st.got.Gateway == gw {
			st.next = now
			renew++
		}
	}
	m.logger().Info("nat: the router lost its port mappings (its epoch does not continue the last reply's); renewing them now", "protocol", p, "gateway", gw,
		"epoch", epoch, "previous", prev.server, "after", now.Sub(prev.client).Round(time.Second), "mappings", renew)
	if renew > 0 && m.started {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}
