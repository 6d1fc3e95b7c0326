package proxy

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Peek-table defaults, documented on the Proxy fields.
const (
	defaultPeeksPerSource  = 32
	defaultPeeksPerNetwork = 256
	defaultPendingPeeks    = 1024
	// peekBits4 and peekBits6 group sources into networks: a /24 is the
	// usual smallest routed IPv4 block, and one IPv6 host owns a whole /64.
	peekBits4, peekBits6 = 24, 64
)

// peekLimits are the caps one admission is checked against; <= 0: none.
type peekLimits struct{ perSource, perNet, total int }

// limiter is the table of connections in the routing phase: counted per
// source address, per source network and in total. When the total is
// reached, the oldest peek is shed to admit the new one: a legitimate
// client sends its hello within a round trip, so the oldest entries are
// the slow ones (slowloris), and shedding them keeps a full table from
// refusing everyone.
type limiter struct {
	mu         sync.Mutex
	total      int
	bySrc      map[netip.Addr]int
	byNet      map[netip.Prefix]int
	head, tail *peekEntry // oldest first
}

// peekEntry is one connection in the table.
type peekEntry struct {
	c          net.Conn
	src        netip.Addr
	net        netip.Prefix
	counted    bool // in bySrc and byNet (untrusted sources)
	shed       bool
	prev, next *peekEntry
}

func (l *limiter) init() {
	l.bySrc = map[netip.Addr]int{}
	l.byNet = map[netip.Prefix]int{}
}

// acquire admits c from src unless its source or network is at its cap.
// At the total cap it sheds the oldest entry, closing its connection; shed
// reports that one happened. counted says whether src is counted against
// per-source and per-network caps (trusted front proxies are not).
func (l *limiter) acquire(c net.Conn, src netip.Addr, lim peekLimits, counted bool) (e *peekEntry, shed bool, ok bool) {
	src = src.Unmap().WithZone("")
	e = &peekEntry{c: c, src: src, net: netcore.Network(src, peekBits4, peekBits6), counted: counted}
	var victim *peekEntry
	l.mu.Lock()
	if counted && (lim.perSource > 0 && l.bySrc[src] >= lim.perSource || lim.perNet > 0 && l.byNet[e.net] >= lim.perNet) {
		l.mu.Unlock()
		return nil, false, false
	}
	if lim.total > 0 && l.total >= lim.total {
		victim = l.head
		if victim == nil {
			l.mu.Unlock()
			return nil, false, false
		}
		victim.shed = true
		l.unlink(victim)
	}
	l.total++
	if counted {
		l.bySrc[src]++
		l.byNet[e.net]++
	}
	e.prev = l.tail
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.mu.Unlock()
	if victim != nil {
		victim.c.Close() // its peek fails at once; release reports the shed
	}
	return e, victim != nil, true
}

// release removes e; it reports whether e was shed meanwhile (its
// connection is then closed, whatever the peek returned).
func (l *limiter) release(e *peekEntry) (shed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.shed {
		return true
	}
	l.unlink(e)
	return false
}

// unlink takes e out of the list and the counts. l.mu is held.
func (l *limiter) unlink(e *peekEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
	l.total--
	if e.counted {
		decr(l.bySrc, e.src)
		decr(l.byNet, e.net)
	}
}

// pending returns the number of connections in the table.
func (l *limiter) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func decr[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
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
	ap := netcore.AddrPort(a)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.listeners == nil {
		g.listeners = map[netip.AddrPort]int{}
	}
	g.listeners[unmapAP(ap)]++
}

func (g *loopGuard) removeListener(a net.Addr) {
	ap := unmapAP(netcore.AddrPort(a))
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
	return connKey{unmapAP(netcore.AddrPort(c.LocalAddr())), unmapAP(netcore.AddrPort(c.RemoteAddr()))}
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
	shed     atomic.Uint64
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
	Peeking  int               // connections in the routing phase now
	Shed     uint64            // slow peeks closed to make room at MaxPendingPeeks (also counted as Rejected["limit"])
	Rejected map[string]uint64 // closed before routing, by Reason.String(); only non-zero entries
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	s := Stats{
		Accepted: p.stats.accepted.Load(),
		Routed:   p.stats.routed.Load(),
		Open:     p.stats.open.Load(),
		Peeking:  p.limits.pending(),
		Shed:     p.stats.shed.Load(),
		Rejected: map[string]uint64{},
	}
	for i := range p.stats.rejects {
		if n := p.stats.rejects[i].Load(); n > 0 {
			s.Rejected[Reason(i).String()] = n
		}
	}
	return s
}
