package proxy

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// limiter counts connections in the routing phase, per source and in total.
type limiter struct {
	mu    sync.Mutex
	total int
	bySrc map[netip.Addr]int
}

func (l *limiter) init() { l.bySrc = map[netip.Addr]int{} }

// acquire admits one more peek from src unless a limit (negative: none) is reached.
func (l *limiter) acquire(src netip.Addr, perSource, total int) bool {
	src = src.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if total > 0 && l.total >= total || perSource > 0 && l.bySrc[src] >= perSource {
		return false
	}
	l.total++
	l.bySrc[src]++
	return true
}

func (l *limiter) release(src netip.Addr) {
	src = src.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.bySrc[src] <= 1 {
		delete(l.bySrc, src)
	} else {
		l.bySrc[src]--
	}
}

// loopGuard knows our listening addresses and the local addresses of the
// backend connections we dialed: a backend address equal to a listener is
// refused before dialing, and an accepted connection whose remote address is
// one of our dials came from ourselves.
type loopGuard struct {
	mu        sync.Mutex
	listeners map[netip.AddrPort]int
	dials     map[connKey]struct{}
}

func (g *loopGuard) addListener(a net.Addr) {
	ap := addrPortOf(a)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.listeners == nil {
		g.listeners = map[netip.AddrPort]int{}
	}
	g.listeners[unmapAP(ap)]++
}

func (g *loopGuard) removeListener(a net.Addr) {
	ap := unmapAP(addrPortOf(a))
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.listeners[ap] <= 1 {
		delete(g.listeners, ap)
	} else {
		g.listeners[ap]--
	}
}

// isListener reports whether dialing a would reach us: one of our
// listeners (a wildcard listener covers loopback), or any port of an address
// in extra (the configured local and public addresses).
func (g *loopGuard) isListener(a netip.AddrPort, extra []netip.Addr) bool {
	a = unmapAP(a)
	if isLocal(a.Addr(), extra) {
		return true // our public address: any port leads back to us or the router
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for l := range g.listeners {
		if l.Port() != a.Port() {
			continue
		}
		if l.Addr() == a.Addr() ||
			l.Addr().IsUnspecified() && (a.Addr().IsLoopback() || a.Addr().IsUnspecified()) {
			return true
		}
	}
	return false
}

func isLocal(a netip.Addr, extra []netip.Addr) bool {
	for _, e := range extra {
		if e.Unmap() == a {
			return true
		}
	}
	return false
}

// connKey is a TCP connection's two ends as seen from one side. The kernel
// reuses an ephemeral port for connections to different destinations, so
// only both ends identify a connection.
type connKey struct{ local, remote netip.AddrPort }

func keyOf(c net.Conn) connKey {
	return connKey{unmapAP(addrPortOf(c.LocalAddr())), unmapAP(addrPortOf(c.RemoteAddr()))}
}

// addDial records a backend connection we dialed.
func (g *loopGuard) addDial(c net.Conn) connKey {
	k := keyOf(c)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dials == nil {
		g.dials = map[connKey]struct{}{}
	}
	g.dials[k] = struct{}{}
	return k
}

func (g *loopGuard) removeDial(k connKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.dials, k)
}

// isOurDial reports whether the accepted connection c is the other end of
// a backend connection we dialed.
func (g *loopGuard) isOurDial(c net.Conn) bool {
	k := keyOf(c)
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.dials[connKey{local: k.remote, remote: k.local}]
	return ok
}

func unmapAP(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// counters are the proxy's statistics.
type counters struct {
	accepted atomic.Uint64
	routed   atomic.Uint64
	open     atomic.Int64
	rejects  [ReasonClosed + 1]atomic.Uint64
}

func (c *counters) reject(r Reason) {
	if r >= 0 && int(r) < len(c.rejects) {
		c.rejects[r].Add(1)
	}
}

// Stats are cumulative counters of a [Proxy], for metrics.
type Stats struct {
	Accepted uint64            // connections accepted
	Routed   uint64            // connections handed to a target
	Open     int64             // client connections open now
	Rejected map[string]uint64 // closed before routing, by Reason.String(); only non-zero entries
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	s := Stats{
		Accepted: p.stats.accepted.Load(),
		Routed:   p.stats.routed.Load(),
		Open:     p.stats.open.Load(),
		Rejected: map[string]uint64{},
	}
	for i := range p.stats.rejects {
		if n := p.stats.rejects[i].Load(); n > 0 {
			s.Rejected[Reason(i).String()] = n
		}
	}
	return s
}
