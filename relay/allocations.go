package relay

import (
	"net/netip"
	"sync"
)

// allocKey identifies an allocation by its client 5-tuple (the engine keys
// UDP, TCP and TLS allocations the same way).
type allocKey struct {
	client, server netip.AddrPort
}

type allocInfo struct {
	userID string
	user   *userCounters
	perms  map[netip.Addr]struct{}
}

// allocTable mirrors the engine's allocations from its events, for quotas,
// permission limits and drain.
type allocTable struct {
	mu      sync.Mutex
	allocs  map[allocKey]*allocInfo
	perUser map[string]int
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

func (t *allocTable) created(k allocKey, userID string, u *userCounters) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.allocs == nil {
		t.allocs = make(map[allocKey]*allocInfo)
		t.perUser = make(map[string]int)
	}
	if _, dup := t.allocs[k]; dup {
		return
	}
	t.allocs[k] = &allocInfo{userID: userID, user: u, perms: map[netip.Addr]struct{}{}}
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
}

func (t *allocTable) exists(k allocKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.allocs[k]
	return ok
}

func (t *allocTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
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

func (t *allocTable) permission(k allocKey, peer netip.Addr, add bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.allocs[k]
	if !ok {
		return
	}
	if add {
		a.perms[peer] = struct{}{}
	} else {
		delete(a.perms, peer)
	}
}

// permitRoom reports whether adding peers keeps the allocation within limit.
func (t *allocTable) permitRoom(k allocKey, peers []netip.Addr, limit int) bool {
	if limit <= 0 {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.allocs[k]
	if !ok {
		return true // the engine answers "no allocation"
	}
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
