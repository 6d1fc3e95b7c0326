package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ErrServerClosed is returned by the Serve methods after Close or Shutdown.
var ErrServerClosed = errors.New("relay: server closed")

// defaultRealm is the realm used when Server.Realm is empty.
const defaultRealm = "hairpin"

// Server is a TURN relay (RFC 8656) with STUN Binding on the same ports.
//
// The zero value is a working STUN server that refuses every allocation
// (no credentials). Add Users or Secrets to relay. Fields must not change
// after the first Serve call, except through SetPublic and SetCredentials.
//
// The peer policy is safe by default: no loopback, private, link-local,
// metadata or other special-purpose peers unless listed in Peers.Allow.
// Whatever Peers allows, the server never relays to itself: CreatePermission,
// ChannelBind, Send and Connect naming one of its listening addresses (UDP,
// TCP or TLS, bound or wildcard, or the public address at a listener's
// port), a TCP relayed address, or a UDP relay socket under an address it
// does not advertise (its bound address behind a NAT) are refused (403,
// DenyOwn; Send is dropped), and so is every relayed packet to them;
// Stats.OwnDenials counts them. ChannelBind, Send and Connect are refused at
// any port of the public address that no allocation holds as well. Another
// allocation's UDP relayed address as advertised is allowed and relayed in
// process, never through the network, so two clients of one relay can reach
// each other (relay-to-relay candidate pairs, the only path between two
// symmetric NATs).
//
// Server is safe for concurrent use.
type Server struct {
	// Realm is the long-term credential realm. If empty, "hairpin" is used.
	Realm string

	// Users optionally maps static long-term user names to passwords.
	Users map[string]string

	// Secrets optionally lists TURN REST API shared secrets (coturn's
	// use-auth-secret). Credentials signed with any of them are accepted,
	// so a secret can be rotated; Credentials signs with the first.
	Secrets []string

	// MaxCredentialLifetime refuses TURN REST credentials that expire
	// further in the future than this. If zero, 48 hours is used.
	MaxCredentialLifetime time.Duration

	// Public optionally specifies the address advertised for relay sockets
	// when the server sits behind a NAT that forwards the relay port range
	// to it. SetPublic changes it at run time. If invalid, the relay
	// socket's own address is advertised.
	Public netip.Addr

	// RelayAddr optionally specifies the local address relay sockets bind.
	// If invalid, the listener's address is used, or the unspecified
	// address when the listener is bound to it.
	RelayAddr netip.Addr

	// RelayPorts is the relay port range; the zero value means 49152-65535.
	RelayPorts PortRange

	// ListenRelay optionally specifies how UDP relay sockets are opened,
	// for example inside a network namespace or VRF; it must return a
	// *net.UDPConn. If nil, net.ListenUDP is used.
	ListenRelay func(network string, laddr netip.AddrPort) (net.PacketConn, error)

	// Peers is the peer address policy, checked on CreatePermission,
	// ChannelBind, Connect, Send and every relayed packet.
	Peers PeerPolicy

	// Limits bound resource use; the zero value has safe defaults.
	Limits Limits

	// TLSConfig is used by ListenAndServeTLS and ServeTLS.
	TLSConfig *tls.Config

	// ReadBatch optionally reads up to this many datagrams per system call
	// (recvmmsg) on client-facing UDP sockets. It saves system calls when
	// packets queue up, at the price of two small allocations per datagram
	// (golang.org/x/net returns a new address each time); 0 or 1 reads one
	// datagram at a time without allocating. The engine takes one datagram
	// at a time, and its writes are one per datagram either way.
	ReadBatch int

	// Logger optionally specifies the logger. If nil, slog.Default() is used.
	Logger *slog.Logger

	// now is the clock, for tests.
	now func() time.Time

	initOnce sync.Once
	auth     *authenticator
	policy   PeerPolicy
	unauth   *netcore.KeyedLimiter[netip.Addr] // 401 replies per source
	failSrc  *netcore.KeyedLimiter[netip.Addr] // failure budget per source
	failUser *netcore.KeyedLimiter[string]     // failure budget per user
	users    userTable
	allocs   allocTable
	reg      registry
	held     heldPorts // reserved odd ports of EVEN-PORT pairs
	listens  listenSet
	hosts    hostAddrs
	counters counters
	// tooLongLog spaces the Info lines about over-long REST credentials.
	tooLongLog logEvery
	public     atomic.Pointer[netip.Addr]
	// stopCtx is cancelled by Close: it ends peer dials (RFC 6062 Connect)
	// the engine makes inside its read loops.
	stopCtx context.Context
	stop    context.CancelFunc

	mu       sync.Mutex
	closed   bool
	draining atomic.Bool
	closers  map[*serving]struct{}
	wg       sync.WaitGroup
}

// serving is one Serve call: what Close must close, and what Shutdown
// closes at once (the listening socket).
type serving struct {
	closeFn func()
	stopFn  func()
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		if s.now == nil {
			s.now = time.Now
		}
		s.stopCtx, s.stop = context.WithCancel(context.Background())
		realm := s.Realm
		if realm == "" {
			realm = defaultRealm
		}
		maxLife := s.MaxCredentialLifetime
		if maxLife <= 0 {
			maxLife = defaultMaxCredentialLifetime
		}
		s.auth = newAuthenticator(realm, s.Users, s.Secrets, maxLife, s.now)
		s.policy = PeerPolicy{Allow: append([]netip.Prefix(nil), s.Peers.Allow...),
			Deny: append([]netip.Prefix(nil), s.Peers.Deny...)}
		s.unauth = s.Limits.unauthLimiter(s.now)
		s.failSrc = s.Limits.failureLimiter(s.now)
		s.failUser = s.Limits.userFailureLimiter(s.now)
		s.users.limit = s.Limits.trackedUsers()
		if s.public.Load() == nil {
			p := s.Public
			s.public.Store(&p)
		}
	})
}

func (s *Server) batchSize() int { return min(s.ReadBatch, 64) }

// SetPublic changes the advertised public address for new allocations, for
// example after the NAT router got a new address. Existing allocations keep
// the address they were given. An invalid addr advertises the relay
// socket's own address.
func (s *Server) SetPublic(addr netip.Addr) {
	s.init()
	a := addr.Unmap()
	s.public.Store(&a)
}

// SetCredentials replaces the static users and the TURN REST secrets, for a
// configuration reload or a secret rotation, without dropping allocations.
// The maps and slices are copied. Requests from then on are checked against
// the new credentials only: an allocation whose user or secret is gone can
// no longer refresh, create permissions or bind channels (401) and ends when
// its lifetime runs out, at most the allocation lifetime later; relayed data
// keeps flowing until then, as on coturn after a secret change.
func (s *Server) SetCredentials(users map[string]string, secrets []string) {
	s.init()
	s.auth.set(users, secrets)
}

// PublicAddr returns the advertised public address, invalid when unset.
func (s *Server) PublicAddr() netip.Addr {
	if p := s.public.Load(); p != nil {
		return *p
	}
	return s.Public
}

func (s *Server) track(sv *serving) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	if s.closers == nil {
		s.closers = make(map[*serving]struct{})
	}
	s.closers[sv] = struct{}{}
	s.wg.Add(1)
	return nil
}

func (s *Server) untrack(sv *serving) {
	s.mu.Lock()
	delete(s.closers, sv)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) bindFor(local net.Addr) netip.Addr {
	if s.RelayAddr.IsValid() {
		return s.RelayAddr.Unmap()
	}
	a := netcore.AddrPort(local).Addr()
	if !a.IsValid() {
		return netip.IPv4Unspecified()
	}
	return a
}

func (s *Server) engineConfig(gen *relayGen) turn.ServerConfig {
	return turn.ServerConfig{
		Realm:         s.auth.realm,
		LoggerFactory: pionLoggerFactory{s.logger()},
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			return s.auth.engineKey(ra.Username, ra.Realm)
		},
		QuotaHandler: func(userID, _ string, _ net.Addr) bool {
			if s.allocs.quota(userID, s.Limits.allocationsPerUser(), s.Limits.allocations()) {
				return true
			}
			s.counters.quotaRejections.Add(1)
			s.logger().Info("relay: allocation quota reached", "user", userID)
			return false
		},
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(src, dst net.Addr, _, userID, _ string, relayAddr net.Addr, _ int) {
				s.counters.allocationsTotal.Add(1)
				var rc *relayConn
				if ua, ok := relayAddr.(*net.UDPAddr); ok {
					if rc = s.reg.get(uint16(ua.Port)); rc != nil && rc.gen != gen {
						rc = nil // another listener's socket: cannot be this allocation's
					}
				}
				s.allocs.created(allocKey{netcore.AddrPort(src), netcore.AddrPort(dst)}, userID, s.users.get(userID), rc)
				s.logger().Debug("relay: allocation created", "client", src, "user", userID, "relay", relayAddr)
			},
			OnAllocationDeleted: func(src, dst net.Addr, _, userID, _ string) {
				s.allocs.deleted(allocKey{netcore.AddrPort(src), netcore.AddrPort(dst)})
				s.logger().Debug("relay: allocation deleted", "client", src, "user", userID)
			},
			OnPermissionCreated: func(src, dst net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
				if a, ok := netip.AddrFromSlice(peer); ok {
					s.allocs.permission(allocKey{netcore.AddrPort(src), netcore.AddrPort(dst)}, a, true)
				}
			},
			OnPermissionDeleted: func(src, dst net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
				if a, ok := netip.AddrFromSlice(peer); ok {
					s.allocs.permission(allocKey{netcore.AddrPort(src), netcore.AddrPort(dst)}, a, false)
				}
			},
			OnChannelCreated: func(src, dst net.Addr, _, _, _ string, _, peer net.Addr, number uint16) {
				s.allocs.channel(allocKey{netcore.AddrPort(src), netcore.AddrPort(dst)}, number, netcore.AddrPort(peer), true)
			},
			OnChannelDeleted: func(src, dst net.Addr, _, _, _ string, _, peer net.Addr, number uint16) {
				s.allocs.channel(allocKey{netcore.AddrPort(src), netcore.AddrPort(dst)}, number, netcore.AddrPort(peer), false)
			},
		},
		AllocationLifetime: s.Limits.lifetime(),
	}
}

// permit is the engine's own permission hook: the same policy once more.
func (s *Server) permit(_ net.Addr, peer net.IP) bool {
	a, ok := netip.AddrFromSlice(peer)
	return ok && s.checkPeer(a) == ""
}

// ServePacket serves TURN and STUN on a UDP socket until Close or Shutdown.
// The server owns pc from then on and closes it. It always returns a
// non-nil error: ErrServerClosed after Close or Shutdown.
func (s *Server) ServePacket(pc net.PacketConn) error {
	s.init()
	w := newPacketConn(s, pc)
	// The client-facing UDP socket is the listener and carries the
	// allocations' traffic: Shutdown closes it at once (see Shutdown).
	sv := &serving{closeFn: func() { w.Close() }, stopFn: func() { w.Close() }}
	if err := s.track(sv); err != nil {
		pc.Close()
		return err
	}
	defer s.untrack(sv)
	own := netcore.AddrPort(pc.LocalAddr())
	s.listens.add(own)
	defer s.listens.remove(own)
	gen := &relayGen{s: s, bind: s.bindFor(pc.LocalAddr()), client: w}
	cfg := s.engineConfig(gen)
	cfg.PacketConnConfigs = []turn.PacketConnConfig{{PacketConn: w, RelayAddressGenerator: gen, PermissionHandler: s.permit}}
	eng, err := turn.NewServer(cfg)
	if err != nil {
		w.Close()
		return fmt.Errorf("relay: start engine: %w", err)
	}
	<-w.done
	_ = eng.Close()
	s.waitEngine(eng)
	if s.isClosed() {
		return ErrServerClosed
	}
	return fmt.Errorf("relay: read: %w", w.err)
}

// Serve serves TURN and STUN over TCP (or TLS, when l yields *tls.Conn) on
// l until Close or Shutdown. The server owns l and closes it. It always
// returns a non-nil error: ErrServerClosed after Close or Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.serveListener(l, "tcp")
}

// ServeTLS serves TURN over TLS on a TCP listener l using TLSConfig.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.TLSConfig == nil {
		l.Close()
		return errors.New("relay: ServeTLS needs TLSConfig")
	}
	return s.serveListener(tls.NewListener(l, s.TLSConfig), "tls")
}

func (s *Server) serveListener(l net.Listener, transport string) error {
	s.init()
	w := newListener(s, l, transport)
	sv := &serving{closeFn: func() { w.Close() }, stopFn: w.stopAccepting}
	if err := s.track(sv); err != nil {
		l.Close()
		return err
	}
	defer s.untrack(sv)
	own := netcore.AddrPort(l.Addr())
	s.listens.add(own)
	defer s.listens.remove(own)
	gen := &relayGen{s: s, bind: s.bindFor(l.Addr())}
	cfg := s.engineConfig(gen)
	cfg.ListenerConfigs = []turn.ListenerConfig{{Listener: w, RelayAddressGenerator: gen, PermissionHandler: s.permit}}
	go w.run()
	eng, err := turn.NewServer(cfg)
	if err != nil {
		w.Close()
		<-w.done
		return fmt.Errorf("relay: start engine: %w", err)
	}
	<-w.done
	_ = eng.Close()
	w.closeConns()
	w.wait()
	s.waitEngine(eng)
	if s.isClosed() {
		return ErrServerClosed
	}
	return fmt.Errorf("relay: accept: %w", w.err)
}

// waitEngine gives the engine's goroutines a moment to close the
// allocations of a stopped listener (the engine does not report it).
func (s *Server) waitEngine(eng *turn.Server) {
	deadline := time.Now().Add(2 * time.Second)
	for eng.AllocationCount() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// Close stops all listeners, drops all allocations, cancels peer dials in
// progress (RFC 6062 Connect), and waits for the Serve calls to return.
func (s *Server) Close() error {
	s.init()
	s.stop()
	s.mu.Lock()
	s.closed = true
	svs := make([]*serving, 0, len(s.closers))
	for sv := range s.closers {
		svs = append(svs, sv)
	}
	s.mu.Unlock()
	for _, sv := range svs {
		sv.closeFn()
	}
	s.wg.Wait()
	s.held.closeAll()
	return nil
}

// Shutdown closes every listening socket at once, so that a new instance
// can bind the same addresses right away, then waits until the allocations
// that survive that end or ctx is done, and closes the server. It returns
// ctx's error if the deadline cut the drain short. Serve calls started
// after Shutdown return ErrServerClosed at once; running ones return when
// the drain ends.
//
// What survives is what lives on an accepted TCP or TLS connection: its
// allocations keep relaying (a new Allocate on it is answered 508), and so
// do the peer connections of its RFC 6062 TCP allocations, though a new
// peer connection cannot be bound (its ConnectionBind would reach the new
// instance). UDP allocations end at once: their clients' packets arrive on
// the listening UDP socket, which is closed (and may be the new instance's
// already), so no drain could keep them; their clients allocate again. A
// port handed over with SO_REUSEPORT instead would not help UDP either:
// the kernel would split each client's packets between both instances.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.draining.Store(true)
	s.mu.Lock()
	s.closed = true // no new Serve call
	svs := make([]*serving, 0, len(s.closers))
	for sv := range s.closers {
		svs = append(svs, sv)
	}
	s.mu.Unlock()
	for _, sv := range svs {
		sv.stopFn()
	}
	s.held.closeAll() // a new instance may bind them; no new Allocate reaches us
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var err error
drain:
	for s.allocs.count() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break drain
		case <-t.C:
		}
	}
	s.Close()
	return err
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.init()
	users, other := s.users.snapshot()
	c := &s.counters
	return Stats{
		Allocations:       uint64(s.allocs.count()),
		AllocationsTotal:  c.allocationsTotal.Load(),
		RelayPortsInUse:   uint64(s.reg.inUse() + s.held.count()),
		PortRangeSize:     uint64(s.RelayPorts.Size()),
		AuthFailures:      c.authFailures.Load(),
		Challenges:        c.challenges.Load(),
		UnauthorizedDrops: c.unauthDrops.Load(),
		FailureDrops:      c.failureDrops.Load(),
		UserFailureDrops:  c.userFailureDrops.Load(),
		PeerDenials:       c.peerDenials.Load(),
		OwnDenials:        c.ownDenials.Load(),
		QuotaRejections:   c.quotaRejections.Load(),
		BandwidthDrops:    c.bandwidthDrops.Load(),
		Malformed:         c.malformed.Load(),
		ConnsRejected:     c.connsRejected.Load(),
		ReadErrors:        c.readErrors.Load(),
		InProcess:         c.inProcess.Load(),
		ChannelDrops:      c.channelDrops.Load(),
		PermissionDrops:   c.permissionDrops.Load(),
		Users:             users,
		OtherUsers:        other,
	}
}
