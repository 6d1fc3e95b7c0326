package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-reuseport"
	"github.com/pion/turn/v5"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// PortRange is an inclusive range of relay ports. The zero value means
// 49152-65535, the IANA dynamic range coturn uses too.
type PortRange struct {
	Min, Max uint16
}

func (r PortRange) bounds() (lo, hi uint16) {
	if r.Min == 0 && r.Max == 0 {
		return 49152, 65535
	}
	lo, hi = r.Min, r.Max
	if lo == 0 {
		lo = 1
	}
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// Size is the number of ports in the range.
func (r PortRange) Size() int {
	lo, hi := r.bounds()
	return int(hi) - int(lo) + 1
}

// String formats the range as "min-max".
func (r PortRange) String() string {
	lo, hi := r.bounds()
	return strconv.Itoa(int(lo)) + "-" + strconv.Itoa(int(hi))
}

// relayBuffer is the receive buffer asked for on relay sockets: a video
// frame arrives as a burst of datagrams. The kernel charges what is queued,
// not what is asked for.
const relayBuffer = 1 << 20

var (
	errNoPort     = errors.New("relay: no free relay port")
	errFamily     = errors.New("relay: address family not served")
	errPeerDenied = errors.New("relay: peer denied by policy")
)

// registry knows every UDP relay socket of the server, for the ports gauge
// and for relaying between our own allocations in process.
type registry struct {
	mu    sync.RWMutex
	ports map[uint16]*relayConn
	own   map[netip.Addr]int // advertised relay addresses (not loopback)
	tcp   atomic.Int64       // TCP relay listeners
	// tcpAddrs holds the advertised and bound address of every TCP relay
	// listener, so that no peer connection is made to one of them.
	tcpAddrs map[netip.AddrPort]int
}

func (r *registry) addTCP(aps ...netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tcpAddrs == nil {
		r.tcpAddrs = make(map[netip.AddrPort]int)
	}
	for _, ap := range aps {
		r.tcpAddrs[ap]++
	}
}

func (r *registry) removeTCP(aps ...netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ap := range aps {
		if r.tcpAddrs[ap]--; r.tcpAddrs[ap] <= 0 {
			delete(r.tcpAddrs, ap)
		}
	}
}

// isTCPRelay reports whether peer is a TCP relayed address of ours: as
// advertised, as bound, or any host address when bound to a wildcard.
func (r *registry) isTCPRelay(peer netip.AddrPort, local func(netip.Addr) bool) bool {
	r.mu.RLock()
	exact := r.tcpAddrs[peer] > 0
	wild := r.tcpAddrs[netip.AddrPortFrom(netip.IPv4Unspecified(), peer.Port())] > 0 ||
		r.tcpAddrs[netip.AddrPortFrom(netip.IPv6Unspecified(), peer.Port())] > 0
	r.mu.RUnlock()
	return exact || wild && local(peer.Addr())
}

func (r *registry) add(c *relayConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ports == nil {
		r.ports = make(map[uint16]*relayConn)
		r.own = make(map[netip.Addr]int)
	}
	if _, dup := r.ports[c.advertised.Port()]; dup {
		return false
	}
	r.ports[c.advertised.Port()] = c
	if !c.advertised.Addr().IsLoopback() {
		r.own[c.advertised.Addr()]++
	}
	return true
}

func (r *registry) remove(c *relayConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ports[c.advertised.Port()] != c {
		return
	}
	delete(r.ports, c.advertised.Port())
	a := c.advertised.Addr()
	if !a.IsLoopback() {
		if r.own[a]--; r.own[a] <= 0 {
			delete(r.own, a)
		}
	}
}

func (r *registry) get(port uint16) *relayConn {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.ports[port]
}

func (r *registry) isOwn(a netip.Addr) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.own[a] > 0
}

func (r *registry) inUse() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.ports) + int(r.tcp.Load())
}

func (s *Server) isOwnRelayAddr(a netip.Addr) bool {
	if p := s.PublicAddr(); p.IsValid() && p == a {
		return true
	}
	return s.reg.isOwn(a)
}

// relayGen allocates relay sockets for one listener. It implements the
// engine's RelayAddressGenerator.
type relayGen struct {
	s    *Server
	bind netip.Addr // address relay sockets bind, maybe unspecified
	// client is the client-facing UDP socket of the engine this generator
	// serves, nil for a stream listener: ChannelData to clients is written
	// to it directly (see relayConn.ReadFrom).
	client *packetConn
}

func (g *relayGen) Validate() error { return nil }

// family returns the bind address for the network the engine asks for.
func (g *relayGen) family(network string) (netip.Addr, error) {
	want6 := network == "udp6" || network == "tcp6"
	b := g.bind
	switch {
	case b.IsUnspecified() && want6:
		return netip.IPv6Unspecified(), nil
	case b.IsUnspecified():
		return netip.IPv4Unspecified(), nil
	case b.Is6() != want6:
		return netip.Addr{}, fmt.Errorf("%w: %s on %s", errFamily, network, b)
	}
	return b, nil
}

// advertise returns the address clients are told for a relay socket bound
// to bind: the public address when set and of the same family, else bind,
// else the host's outbound address.
func (g *relayGen) advertise(bind netip.Addr) netip.Addr {
	if p := g.s.PublicAddr(); p.IsValid() && p.Is4() == bind.Is4() {
		return p
	}
	if !bind.IsUnspecified() {
		return bind
	}
	return outboundAddr(bind.Is6())
}

// outboundAddr finds the address the host would send from, without sending.
func outboundAddr(v6 bool) netip.Addr {
	target := "192.0.2.1:9"
	if v6 {
		target = "[2001:db8::1]:9"
	}
	c, err := net.Dial("udp", target)
	if err != nil {
		if v6 {
			return netip.IPv6Loopback()
		}
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	defer c.Close()
	return netcore.AddrPort(c.LocalAddr()).Addr()
}

func (g *relayGen) ports(requested int) []uint16 {
	if requested > 0 {
		return []uint16{uint16(requested)}
	}
	lo, hi := g.s.RelayPorts.bounds()
	out := make([]uint16, 0, relayPortTries)
	for _, i := range spread(int(hi)-int(lo)+1, relayPortTries) {
		out = append(out, lo+uint16(i))
	}
	return out
}

// relayPortTries is how many ports of the range an allocation tries.
const relayPortTries = 64

// spread returns up to tries distinct indexes below n, from a random start
// and spaced by a prime stride, so that probes for a free port do not walk
// a crowded stretch of the range one by one.
func spread(n, tries int) []int {
	if n <= 0 {
		return nil
	}
	out := make([]int, 0, min(n, tries))
	start := rand.IntN(n)
	for i := 0; i < tries && i < n; i++ {
		out = append(out, (start+i*7919)%n) // 7919 is prime
	}
	return out
}

func (g *relayGen) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	bind, err := g.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	adv := g.advertise(bind)
	wrap := func(uc *net.UDPConn, port uint16) (net.PacketConn, net.Addr, bool) {
		_ = uc.SetReadBuffer(relayBuffer)
		rc := g.s.newRelayConn(uc, bind, netip.AddrPortFrom(adv, port), conf.UserID)
		rc.gen, rc.client = g, g.client
		if !g.s.reg.add(rc) {
			uc.Close()
			return nil, nil, false
		}
		return rc, net.UDPAddrFromAddrPort(rc.advertised), true
	}
	// An explicit port is the engine's: even for EVEN-PORT (bind a pair,
	// hold the odd one), odd for RESERVATION-TOKEN (the held one); see
	// evenport.go.
	if rp := conf.RequestedPort; rp > 0 && rp <= 0xffff {
		port := uint16(rp)
		if port%2 == 1 {
			if uc := g.s.held.take(netip.AddrPortFrom(bind, port)); uc != nil {
				if pc, a, ok := wrap(uc, port); ok {
					return pc, a, nil
				}
				return nil, nil, errNoPort
			}
		} else if uc, p, ok := g.bindPair(conf.Network, bind, port); ok {
			if pc, a, ok := wrap(uc, p); ok {
				return pc, a, nil
			}
			return nil, nil, errNoPort
		}
	}
	for _, port := range g.ports(conf.RequestedPort) {
		uc, err := g.s.listenRelay(conf.Network, netip.AddrPortFrom(bind, port))
		if err != nil {
			continue
		}
		if pc, a, ok := wrap(uc, port); ok {
			return pc, a, nil
		}
	}
	return nil, nil, errNoPort
}

func (s *Server) listenRelay(network string, laddr netip.AddrPort) (*net.UDPConn, error) {
	if s.ListenRelay == nil {
		return net.ListenUDP(network, net.UDPAddrFromAddrPort(laddr))
	}
	pc, err := s.ListenRelay(network, laddr)
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("relay: ListenRelay returned %T, want *net.UDPConn", pc)
	}
	return uc, nil
}

func (g *relayGen) AllocateListener(conf turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	bind, err := g.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	adv := g.advertise(bind)
	for _, port := range g.ports(conf.RequestedPort) {
		ln, err := listenRelayTCP(conf.Network, netip.AddrPortFrom(bind, port))
		if err != nil {
			continue
		}
		g.s.reg.tcp.Add(1)
		addrs := []netip.AddrPort{netip.AddrPortFrom(adv, port), netip.AddrPortFrom(bind, port)}
		g.s.reg.addTCP(addrs...)
		tl := &tcpRelayListener{Listener: ln, reg: &g.s.reg, addrs: addrs}
		return tl, net.TCPAddrFromAddrPort(netip.AddrPortFrom(adv, port)), nil
	}
	return nil, nil, errNoPort
}

func (g *relayGen) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	remote := netcore.AddrPort(conf.RemoteAddr)
	if d := g.s.checkPeerPort(remote, true); d != "" {
		g.s.counters.peerDenials.Add(1)
		if d == DenyOwn {
			g.s.counters.ownDenials.Add(1)
		}
		return nil, fmt.Errorf("%w: %s (%s)", errPeerDenied, remote, d)
	}
	bind, err := g.family(conf.Network)
	if err != nil {
		return nil, err
	}
	local := netip.AddrPortFrom(bind, netcore.AddrPort(conf.LocalAddr).Port())
	ctx, cancel := context.WithTimeout(g.s.stopCtx, 30*time.Second) // RFC 6062: at least 30 s
	defer cancel()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Control: reuseport.Control}
	return d.DialContext(ctx, conf.Network, remote.String())
}

type tcpRelayListener struct {
	net.Listener
	reg   *registry
	addrs []netip.AddrPort // advertised and bound
	once  sync.Once
}

func (l *tcpRelayListener) Close() error {
	l.once.Do(func() {
		l.reg.tcp.Add(-1)
		l.reg.removeTCP(l.addrs...)
	})
	return l.Listener.Close()
}

// relayConn is one allocation's UDP relay socket. The engine reads it from
// one goroutine and writes it from the listener's read loop.
type relayConn struct {
	s          *Server
	gen        *relayGen   // the generator that made it, one per listener
	client     *packetConn // the client-facing UDP socket, nil on streams
	alloc      atomic.Pointer[allocInfo]
	conn       *net.UDPConn
	io         *netcore.BatchConn // conn's reads and writes, without waking the runtime's sysmon
	bind       netip.Addr
	advertised netip.AddrPort
	local      netip.AddrPort // where our own sockets deliver to it
	localAddr  *net.UDPAddr   // advertised, for LocalAddr
	user       *userCounters
	in, out    *bucket
	closeOnce  sync.Once

	// reader-only state
	addrs map[netip.AddrPort]*net.UDPAddr
}

func (s *Server) newRelayConn(uc *net.UDPConn, bind netip.Addr, adv netip.AddrPort, userID string) *relayConn {
	local := bind
	if local.IsUnspecified() {
		if local.Is4() {
			local = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		} else {
			local = netip.IPv6Loopback()
		}
	}
	bw := float64(s.Limits.bandwidth())
	return &relayConn{
		s:          s,
		conn:       uc,
		io:         netcore.NewBatchConn(uc),
		bind:       bind,
		advertised: adv,
		localAddr:  udpAddr16(adv),
		local:      netip.AddrPortFrom(local, adv.Port()),
		user:       s.users.get(userID),
		in:         newBucket(bw, bw),
		out:        newBucket(bw, bw),
		addrs:      make(map[netip.AddrPort]*net.UDPAddr),
	}
}

// udpAddr16 is net.UDPAddrFromAddrPort with the IP always in 16-byte form,
// so the engine's IP.To16 calls on the hot path do not allocate.
func udpAddr16(ap netip.AddrPort) *net.UDPAddr {
	b := ap.Addr().As16()
	return &net.UDPAddr{IP: net.IP(b[:]), Port: int(ap.Port()), Zone: ap.Addr().Zone()}
}

// udpAddr returns a shared *net.UDPAddr for ap without allocating on the
// steady-state path; the cache is bounded.
func udpAddr(cache map[netip.AddrPort]*net.UDPAddr, ap netip.AddrPort) *net.UDPAddr {
	if a, ok := cache[ap]; ok {
		return a
	}
	if len(cache) >= 1024 {
		clear(cache)
	}
	a := udpAddr16(ap)
	cache[ap] = a
	return a
}

// ReadFrom returns the next datagram from a peer for the engine to send as a
// Data indication. A datagram from another of our relay sockets (in-process
// relay) is reported as coming from that socket's advertised address, which
// is what the peer's permission names.
//
// The fast path never reaches the engine: a datagram from a peer without a
// permission is dropped here (Stats.PermissionDrops), before it costs the
// client's bandwidth; one from a peer bound to a channel is sent to the
// client as ChannelData, the header written in front of the datagram in
// place, without allocating: the datagram is read into p[4:] (the engine's
// buffer), and moved to the front only for a Data indication.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if len(p) <= 4 {
		return 0, nil, io.ErrShortBuffer
	}
	for {
		n, ap, err := c.io.ReadFrom(p[4:])
		if err != nil {
			return 0, nil, err
		}
		ap = unmapAP(ap)
		if other := c.s.reg.get(ap.Port()); other != nil && other.local.Addr() == ap.Addr() {
			ap = other.advertised
		}
		if c.toClient(p[:4+n], ap) {
			continue
		}
		if !c.in.take(time.Now(), float64(n)) {
			c.s.counters.bandwidthDrops.Add(1)
			continue
		}
		c.user.packetsFromPeer.Add(1)
		c.user.bytesFromPeer.Add(uint64(n))
		return copy(p, p[4:4+n]), udpAddr(c.addrs, ap), nil
	}
}

// toClient handles a datagram from peer, b[4:], for this allocation's client
// and reports whether it is done: dropped for want of a permission
// (Stats.PermissionDrops) or of bandwidth, or sent as ChannelData with the
// header written at b[0:4]. It is not done when the engine must send a Data
// indication (no channel bound to peer, or a stream client), and checked the
// permission then.
func (c *relayConn) toClient(b []byte, peer netip.AddrPort) bool {
	a := c.alloc.Load()
	if a == nil {
		return false // not reported yet: the engine checks the permission
	}
	number, bound, permitted := a.fromPeer(peer)
	if !permitted {
		c.s.counters.permissionDrops.Add(1)
		return true
	}
	if !bound || c.client == nil || c.client.udp == nil {
		return false
	}
	n := len(b) - 4
	if !c.in.take(time.Now(), float64(n)) {
		c.s.counters.bandwidthDrops.Add(1)
		return true
	}
	c.user.packetsFromPeer.Add(1)
	c.user.bytesFromPeer.Add(uint64(n))
	binary.BigEndian.PutUint16(b[0:2], number)
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	_ = c.client.write(b, a.client)
	return true
}

// WriteTo sends a datagram to a peer, after the peer policy. A peer that is
// another of our own allocations gets it in process, through its private
// socket address, so no hairpin through the NAT router is needed.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	return c.writeTo(p, 0, netcore.AddrPort(addr))
}

// writeTo is WriteTo of b[room:] for a netip.AddrPort. With room for a
// ChannelData header in front (the fast path's, room 4), a datagram to
// another allocation of ours bound to a channel there goes straight to that
// allocation's client (toClient), never through the kernel: one system
// call and one wake-up instead of three.
func (c *relayConn) writeTo(b []byte, room int, dst netip.AddrPort) (int, error) {
	p := b[room:]
	canon := canonicalAP(dst)
	other := c.s.reg.get(canon.Port())
	if other != nil && other.advertised == canon {
		c.s.counters.inProcess.Add(1)
		dst = other.local
	} else if c.s.isOwnRelayAddr(canon.Addr()) || c.s.ownSocket(canon, other) {
		c.s.counters.peerDenials.Add(1)
		c.s.counters.ownDenials.Add(1)
		return 0, errPeerDenied
	} else if d := c.s.policy.Check(dst.Addr()); d != "" {
		c.s.counters.peerDenials.Add(1)
		return 0, errPeerDenied
	} else {
		other = nil
	}
	if !c.out.take(time.Now(), float64(len(p))) {
		c.s.counters.bandwidthDrops.Add(1)
		return len(p), nil // dropped, as a congested link would
	}
	c.user.packetsToPeer.Add(1)
	c.user.bytesToPeer.Add(uint64(len(p)))
	if other != nil && room >= 4 && other.toClient(b[room-4:], c.advertised) {
		return len(p), nil
	}
	if err := c.io.WriteTo(p, dst); err != nil {
		return 0, err
	}
	return len(p), nil
}

// boundTo reports whether a (canonical) reaches this socket through the
// host's network stack: its bound address, or loopback and any address of
// the host when it is bound to a wildcard.
func (c *relayConn) boundTo(a netip.Addr) bool {
	if a == c.bind || a == c.local.Addr() {
		return true
	}
	return c.bind.IsUnspecified() && c.s.hosts.local(a)
}

func (c *relayConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.s.reg.remove(c)
		err = c.conn.Close()
	})
	return err
}

func (c *relayConn) LocalAddr() net.Addr                { return c.localAddr }
func (c *relayConn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *relayConn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *relayConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
