package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// DenyOwn refuses a peer that is one of the server's own listening
// addresses, or one of its relayed addresses that is not relayed in process
// (a TCP relayed address, a UDP relay socket under an address it does not
// advertise, or a port of a relayed address with no allocation). A relay
// must never talk to itself through the network: a loop would hide the
// client behind the relay's own address.
const DenyOwn Denial = "the relay's own address"

// listenSet is the set of addresses the server listens on for clients
// (UDP and TCP alike: a relay socket must reach neither).
type listenSet struct {
	mu    sync.RWMutex
	addrs map[netip.AddrPort]int
	ports map[uint16]int // fast path: most peers share no port with a listener
}

func (l *listenSet) add(ap netip.AddrPort) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs == nil {
		l.addrs = make(map[netip.AddrPort]int)
		l.ports = make(map[uint16]int)
	}
	ap = netip.AddrPortFrom(Canonical(ap.Addr()), ap.Port())
	l.addrs[ap]++
	l.ports[ap.Port()]++
}

func (l *listenSet) remove(ap netip.AddrPort) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ap = netip.AddrPortFrom(Canonical(ap.Addr()), ap.Port())
	if l.addrs[ap]--; l.addrs[ap] <= 0 {
		delete(l.addrs, ap)
	}
	if l.ports[ap.Port()]--; l.ports[ap.Port()] <= 0 {
		delete(l.ports, ap.Port())
	}
}

// matches reports whether peer (canonical) is a listening address: the
// address a listener is bound to, the advertised public address with a
// listener's port (the router forwards it to the listener, whatever the
// listener is bound to), or, for a wildcard listener (0.0.0.0 or ::), any
// address that reaches this host (local) with that port. A wildcard is
// matched on port plus host address, not on port alone: a peer elsewhere
// that happens to use our port is not us.
func (l *listenSet) matches(peer netip.AddrPort, own, local func(netip.Addr) bool) bool {
	l.mu.RLock()
	if l.ports[peer.Port()] == 0 {
		l.mu.RUnlock()
		return false
	}
	exact := l.addrs[peer] > 0
	wild := l.addrs[netip.AddrPortFrom(netip.IPv4Unspecified(), peer.Port())] > 0 ||
		l.addrs[netip.AddrPortFrom(netip.IPv6Unspecified(), peer.Port())] > 0
	l.mu.RUnlock()
	if exact {
		return true
	}
	// The public address forwards to the listener, whatever it is bound to.
	if own(peer.Addr()) {
		return true
	}
	return wild && local(peer.Addr())
}

// hostAddrRefresh is how long the host's interface addresses are cached:
// they change rarely (a DHCP renewal, an interface coming up), and a netlink
// dump for every packet to a peer whose port happens to be one of ours
// would cost far more than relaying it.
const hostAddrRefresh = time.Second

// hostAddrs tells whether an address reaches this host, from a cached list
// of the addresses assigned to its interfaces.
type hostAddrs struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]struct{}
}

// local reports whether a (canonical) is this host: loopback, unspecified
// (the kernel delivers to this host) or assigned to one of its interfaces.
// It runs only for a peer whose port one of our wildcard sockets uses.
func (h *hostAddrs) local(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); h.addrs == nil || now.Sub(h.at) >= hostAddrRefresh {
		h.at = now
		if addrs, err := net.InterfaceAddrs(); err == nil || h.addrs == nil {
			h.addrs = make(map[netip.Addr]struct{}, len(addrs))
			for _, ia := range addrs {
				if n, ok := ia.(*net.IPNet); ok {
					if b, ok := netip.AddrFromSlice(n.IP); ok {
						h.addrs[b.Unmap()] = struct{}{}
					}
				}
			}
		}
	}
	_, ok := h.addrs[a]
	return ok
}

// canonicalAP is ap with its address in canonical form (see Canonical).
func canonicalAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(Canonical(ap.Addr()), ap.Port())
}

// ownSocket reports whether peer (canonical) is one of the server's own
// sockets: a listening address, a TCP relayed address, or a UDP relay
// socket under an address other than the one it advertises (the address it
// is bound to, or loopback and the host's addresses when it is bound to a
// wildcard). other is the UDP relay socket at peer's port, if any. An
// allocation's UDP relayed address as advertised is not: traffic to it is
// relayed in process (relayConn.WriteTo) and never reaches the network.
func (s *Server) ownSocket(peer netip.AddrPort, other *relayConn) bool {
	if s.listens.matches(peer, s.isOwnRelayAddr, s.hosts.local) || s.reg.isTCPRelay(peer, s.hosts.local) {
		return true
	}
	return other != nil && other.advertised != peer && other.boundTo(peer.Addr())
}

// ownPeer reports whether a peer transport address is the server itself:
// one of its sockets (ownSocket), or an address of ours at a port no UDP
// allocation holds. Another allocation's UDP relayed address as advertised
// is not: it is relayed in process. tcp says whether the peer is to be
// reached over TCP (Connect), which is never in process.
func (s *Server) ownPeer(peer netip.AddrPort, tcp bool) bool {
	peer = canonicalAP(peer)
	other := s.reg.get(peer.Port())
	if s.ownSocket(peer, other) {
		return true
	}
	if !s.isOwnRelayAddr(peer.Addr()) {
		return false
	}
	return tcp || other == nil || other.advertised != peer
}

// checkPermission is checkPeer for CreatePermission. A permission is for an
// IP address, whatever port the request names (RFC 8656 §9.1), so a peer is
// refused as our own only when it names one of our sockets exactly: the
// public address at another port is the server-reflexive address of a host
// behind the same router, and refusing it would fail the permission that
// relaying to another allocation of ours needs (clients such as pion's
// keep one permission per IP address and refresh them all in one request).
func (s *Server) checkPermission(peer netip.AddrPort) Denial {
	if !peer.IsValid() {
		return DenyInvalid
	}
	if d := s.checkPeer(peer.Addr()); d != "" {
		return d
	}
	c := canonicalAP(peer)
	if s.ownSocket(c, s.reg.get(c.Port())) {
		return DenyOwn
	}
	return ""
}

// checkPeerPort is checkPeer for a request that names a port (ChannelBind,
// Send, Connect): our own listening and relayed addresses are refused too.
func (s *Server) checkPeerPort(peer netip.AddrPort, tcp bool) Denial {
	if !peer.IsValid() {
		return DenyInvalid
	}
	if s.ownPeer(peer, tcp) {
		return DenyOwn
	}
	return s.checkPeer(peer.Addr())
}
