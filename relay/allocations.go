package relay

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// allocKey identifies an allocation by its client 5-tuple (the engine keys
// UDP, TCP and TLS allocations the same way).
type allocKey struct {
	client, server netip.AddrPort
}

// allocInfo is one allocation as the engine's events describe it: what the
// quotas and the ChannelData fast path (channel.go) need.
type allocInfo struct {
	userID string
	user   *userCounters
	client netip.AddrPort // the client's transport address (5-tuple source)
	// relay is the allocation's UDP relay socket; nil for an RFC 6062 TCP
	// allocation, and until the engine reports the allocation.
	relay atomic.Pointer[relayConn]

	mu sync.RWMutex // guards the maps below; never held across I/O
	// perms holds the permitted peer addresses in canonical form, for the
	// permission limit.
	perms map[netip.Addr]struct{}
	// exact holds them as the engine keys them (unmapped, no zone): what
	// relaying checks.
	exact map[netip.Addr]struct{}
	// chans and byPeer are the channel bindings both ways; the engine
	// times them out and reports it.
	chans  map[uint16]netip.AddrPort
	byPeer map[netip.AddrPort]uint16
}

// allocTable mirrors the engine's allocations from its events, for quotas,
// permission limits, drain and the ChannelData fast path. Lookups on the
// packet path take the read lock only.
type allocTable struct {
	mu      sync.RWMutex
	allocs  map[allocKey]*allocInfo
	perUser map[string]int
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

// created records an allocation; rc is its UDP relay socket, or nil.
func (t *allocTable) created(k allocKey, userID string, u *userCounters, rc *relayConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.allocs == nil {
		t.allocs = make(map[allocKey]*allocInfo)
		t.perUser = make(map[string]int)
	}
	if _, dup := t.allocs[k]; dup {
		return
	}
	a := &allocInfo{userID: userID, user: u, client: k.client, perms: map[netip.Addr]struct{}{}}
	if rc != nil {
		a.relay.Store(rc)
		rc.alloc.Store(a)
	}
	t.allocs[k] = a
	t.perUser[userID]++
	u.allocations.Add(1)
}

func (t *allocTable) deleted(k allocKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.allocs[k]
	if !ok {
		return
	}
	delete(t.allocs, k)
	if t.perUser[a.userID]--; t.perUser[a.userID] <= 0 {
		delete(t.perUser, a.userID)
	}
	a.user.allocations.Add(-1)
	if rc := a.relay.Swap(nil); rc != nil {
		rc.alloc.CompareAndSwap(a, nil)
	}
}

// get returns the allocation of a 5-tuple, or nil.
func (t *allocTable) get(k allocKey) *allocInfo {
	t.mu.RLock()
	a := t.allocs[k]
	t.mu.RUnlock()
	return a
}

func (t *allocTable) exists(k allocKey) bool {
	return t.get(k) != nil
}

func (t *allocTable) count() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.allocs)
}

// quota reports whether userID may create one more allocation.
func (t *allocTable) quota(userID string, perUser, total int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if total > 0 && len(t.allocs) >= total {
		return false
	}
	return perUser <= 0 || t.perUser[userID] < perUser
}

// permission records a permission the engine created or deleted; peer is
// the address as the engine keys it.
func (t *allocTable) permission(k allocKey, peer netip.Addr, add bool) {
	a := t.get(k)
	if a == nil {
		return
	}
	peer = peer.Unmap().WithZone("")
	a.mu.Lock()
	defer a.mu.Unlock()
	if add {
		a.perms[Canonical(peer)] = struct{}{}
		if a.exact == nil {
			a.exact = make(map[netip.Addr]struct{})
		}
		a.exact[peer] = struct{}{}
	} else {
		delete(a.perms, Canonical(peer))
		delete(a.exact, peer)
	}
}

// channel records a channel binding the engine created or deleted.
func (t *allocTable) channel(k allocKey, number uint16, peer netip.AddrPort, add bool) {
	a := t.get(k)
	if a == nil {
		return
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	a.mu.Lock()
	defer a.mu.Unlock()
	if add {
		if a.chans == nil {
			a.chans = make(map[uint16]netip.AddrPort)
			a.byPeer = make(map[netip.AddrPort]uint16)
		}
		a.chans[number] = peer
		a.byPeer[peer] = number
		return
	}
	if a.chans[number] == peer {
		delete(a.chans, number)
	}
	if n, ok := a.byPeer[peer]; ok && n == number {
		delete(a.byPeer, peer)
	}
}

// channelPeer returns the peer bound to channel number, when the peer also
// holds a permission (RFC 8656 §12: a channel does not outlive its
// permission, though the engine keeps the binding).
func (a *allocInfo) channelPeer(number uint16) (netip.AddrPort, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	peer, ok := a.chans[number]
	if !ok {
		return netip.AddrPort{}, false
	}
	_, ok = a.exact[peer.Addr().WithZone("")]
	return peer, ok
}

// fromPeer reports whether a datagram from peer may reach the client
// (permitted) and the channel it is bound to, if any (bound).
func (a *allocInfo) fromPeer(peer netip.AddrPort) (number uint16, bound, permitted bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if _, permitted = a.exact[peer.Addr().WithZone("")]; !permitted {
		return 0, false, false
	}
	number, bound = a.byPeer[peer]
	return number, bound, true
}

// permitRoom reports whether adding peers keeps the allocation within limit.
func (t *allocTable) permitRoom(k allocKey, peers []netip.Addr, limit int) bool {
	if limit <= 0 {
		return true
	}
	a := t.get(k)
	if a == nil {
		return true // the engine answers "no allocation"
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	n := len(a.perms)
	for i, p := range peers {
		if _, ok := a.perms[p]; ok {
			continue
		}
		dup := false
		for _, q := range peers[:i] {
			dup = dup || q == p
		}
		if !dup {
			n++
		}
	}
	return n <= limit
}
