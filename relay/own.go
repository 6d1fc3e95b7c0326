package relay

import (
	"net"
	"net/netip"
	"sync"
)

// DenyOwn refuses a peer that is one of the server's own listening
// addresses, or one of its relayed addresses that is not relayed in process
// (a TCP relayed address, or a port of a relayed address with no
// allocation). A relay must never talk to itself through the network: a
// loop would hide the client behind the relay's own address.
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
// address a listener is bound to, or, for a wildcard listener, any address
// of this host or the advertised public address with that port.
func (l *listenSet) matches(peer netip.AddrPort, own func(netip.Addr) bool) bool {
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
	return wild && (peer.Addr().IsLoopback() || peer.Addr().IsUnspecified() || isHostAddr(peer.Addr()))
}

// isHostAddr reports whether a is assigned to one of this host's
// interfaces. It runs only for a peer whose port a wildcard listener uses.
func isHostAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// ownPeer reports whether a peer transport address is the server itself:
// a listening address, a TCP relayed address, or an address of ours at a
// port no UDP allocation holds. Another allocation's UDP relayed address is
// not: it is relayed in process (relayConn.WriteTo). tcp says whether the
// peer is to be reached over TCP (Connect), which is never in process.
func (s *Server) ownPeer(peer netip.AddrPort, tcp bool) bool {
	peer = netip.AddrPortFrom(Canonical(peer.Addr()), peer.Port())
	if s.listens.matches(peer, s.isOwnRelayAddr) || s.reg.isTCPRelay(peer) {
		return true
	}
	if !s.isOwnRelayAddr(peer.Addr()) {
		return false
	}
	if tcp {
		return true
	}
	other := s.reg.get(peer.Port())
	return other == nil || other.advertised != peer
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
