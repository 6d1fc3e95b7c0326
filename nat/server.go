package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ErrServerClosed is returned by the Server's Serve methods after Close or Shutdown.
var ErrServerClosed = errors.New("nat: server closed")

// Socket positions of an RFC 5780 server: bit 1 selects the IP (primary or
// alternate), bit 0 the port. The diagonal (index ^ 3) is the OTHER-ADDRESS.
const (
	primaryPrimary   = 0 // primary IP, primary port
	primaryAlternate = 1 // primary IP, alternate port
	alternatePrimary = 2 // alternate IP, primary port
	alternateAlt     = 3 // alternate IP, alternate port
	changeIPBit      = 2
	changePortBit    = 1
)

// DefaultRateLimit is the number of requests per second a Server answers
// from one source IP when Server.RateLimit is zero. A full probe by our
// Client sends about twenty requests, and many users can share one address
// behind a carrier-grade NAT, so the limit is generous; it exists to keep the
// server from being a useful reflector, not to police clients.
const DefaultRateLimit = 200

// maxMessage bounds a STUN message the server reads over TCP. Binding
// requests are small; anything larger is not one we answer.
const maxMessage = 2048

// maxConnsPerSource caps the concurrent TCP connections from one source IP.
// Each costs a goroutine, a buffer and a descriptor for up to
// tcpIdleTimeout, so one host must not open thousands; a probe opens three
// at once, and a carrier-grade NAT puts many users behind one address.
const maxConnsPerSource = 64

// readErrorPause is how long a UDP reader waits after a passing read error
// such as EMFILE before it reads again, so that a descriptor shortage does
// not spin a core; it is the accept loop's first backoff.
const readErrorPause = 5 * time.Millisecond

// tcpIdleTimeout is how long a TCP connection may stay silent before the
// server closes it; clients open one connection per probe, so a short
// timeout costs nothing and frees descriptors.
const tcpIdleTimeout = 30 * time.Second

// Server is a STUN server for NAT behaviour discovery (RFC 5389 Binding with
// the RFC 5780 attributes). With one address it is a plain STUN server; with a
// primary and an alternate address (four UDP sockets: both IPs × both ports)
// it answers the RFC 5780 tests: OTHER-ADDRESS, RESPONSE-ORIGIN,
// CHANGE-REQUEST, RESPONSE-PORT and PADDING.
//
// The server is not an amplifier: it only answers Binding requests, a
// response is larger than the request only by its four address attributes
// (48 bytes over IPv4, 96 over IPv6; PADDING is echoed only as long as the
// request's own PADDING), RESPONSE-PORT can only redirect
// to another port of the requesting IP and never together with PADDING, and
// each source IP is rate limited. Over TCP one source IP holds at most 64
// connections at a time.
//
// The zero value is ready to use with the Serve methods. A Server is safe for
// concurrent use. Close and Shutdown close every socket and listener the
// server was given and wait for its goroutines.
type Server struct {
	// Primary optionally specifies the primary address: ListenAndServe
	// listens on it when called with an empty address, and TCP listeners
	// given to Serve announce OTHER-ADDRESS from it and Alternate. Its IP
	// must not be unspecified when Alternate is set.
	Primary netip.AddrPort

	// Alternate optionally specifies the second address of an RFC 5780
	// server; it must differ from the primary address in both IP and port.
	// If it is the zero value, ListenAndServe runs a plain STUN server.
	Alternate netip.AddrPort

	// RateLimit is the most requests per second answered per source IP.
	// Zero means DefaultRateLimit; a negative value disables the limit.
	// Requests beyond it are dropped silently and counted in
	// ServerStats.RateLimited; the bucket holds one second's worth, so a
	// probe's burst of about twenty requests always passes.
	RateLimit int

	// Logger optionally specifies where to log; if nil, slog.Default() is used.
	Logger *slog.Logger

	mu        sync.Mutex
	closed    bool
	done      chan struct{}
	packets   map[net.PacketConn]struct{}
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	perSrc    map[netip.Addr]int // open TCP connections per source IP
	wg        sync.WaitGroup
	limitOnce sync.Once
	limit     *netcore.KeyedLimiter[netip.Addr]
	stats     serverCounters
}

// ServerStats are the counters of a Server since it was created.
type ServerStats struct {
	Requests    uint64 // Binding requests received (UDP and TCP)
	Responses   uint64 // Binding success responses sent
	Errors      uint64 // error responses sent (400, 420)
	Dropped     uint64 // packets that were not Binding requests, or malformed
	RateLimited uint64 // requests dropped by the per-source rate limit
	TCPConns    uint64 // TCP connections accepted
	TCPRejected uint64 // TCP connections closed at once: over the per-source cap
	ReadErrors  uint64 // failed reads and accepts that did not stop serving (EMFILE, ICMP errors)
}

type serverCounters struct {
	requests, responses, errors, dropped, rateLimited, tcpConns, tcpRejected, readErrors atomic.Uint64
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Requests:    s.stats.requests.Load(),
		Responses:   s.stats.responses.Load(),
		Errors:      s.stats.errors.Load(),
		Dropped:     s.stats.dropped.Load(),
		RateLimited: s.stats.rateLimited.Load(),
		TCPConns:    s.stats.tcpConns.Load(),
		TCPRejected: s.stats.tcpRejected.Load(),
		ReadErrors:  s.stats.readErrors.Load(),
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) rateLimit() int {
	if s.RateLimit == 0 {
		return DefaultRateLimit
	}
	return s.RateLimit
}

// allow reports whether one more request from a may be answered: a token
// bucket per source IP (netcore.KeyedLimiter, bounded keys), built on first
// use from RateLimit.
func (s *Server) allow(a netip.Addr) bool {
	s.limitOnce.Do(func() {
		s.limit = &netcore.KeyedLimiter[netip.Addr]{}
		if r := s.rateLimit(); r > 0 {
			s.limit.Rate = rate.Limit(r)
			s.limit.Burst = r
		}
	})
	return s.limit.Allow(a)
}

// track registers closers under the server lock and counts the calling
// Serve method in wg, so Close waits for it; the caller must call
// s.wg.Done when it returns. It fails once the server is closed.
func (s *Server) track(pcs []net.PacketConn, l net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		// Like net/http: serving after Close closes what it was given.
		for _, pc := range pcs {
			pc.Close()
		}
		if l != nil {
			l.Close()
		}
		return ErrServerClosed
	}
	if s.done == nil {
		s.done = make(chan struct{})
	}
	if s.packets == nil {
		s.packets = map[net.PacketConn]struct{}{}
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]struct{}{}
		s.perSrc = map[netip.Addr]int{}
	}
	for _, pc := range pcs {
		s.packets[pc] = struct{}{}
	}
	if l != nil {
		s.listeners[l] = struct{}{}
	}
	s.wg.Add(1)
	return nil
}

// untrack forgets closers when a Serve method returns, and closes them: a
// Serve method closes what it was given on every return.
func (s *Server) untrack(pcs []net.PacketConn, l net.Listener) {
	s.mu.Lock()
	for _, pc := range pcs {
		delete(s.packets, pc)
	}
	if l != nil {
		delete(s.listeners, l)
	}
	s.mu.Unlock()
	for _, pc := range pcs {
		pc.Close()
	}
	if l != nil {
		l.Close()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// ServePacket runs a plain STUN server on conn until Close. It answers
// Binding requests with XOR-MAPPED-ADDRESS, MAPPED-ADDRESS and
// RESPONSE-ORIGIN; CHANGE-REQUEST is refused with 420, as RFC 5780 asks of a
// server without an alternate address. Read errors other than a closed
// socket (EMFILE, ICMP-induced errors) are counted in ServerStats.ReadErrors
// and do not stop it. It closes conn when it returns, and always returns a
// non-nil error, ErrServerClosed after Close.
func (s *Server) ServePacket(conn net.PacketConn) error {
	return s.servePackets([]net.PacketConn{conn})
}

// ServeRFC5780 runs an RFC 5780 server on four UDP sockets until Close:
// pp on the primary IP and primary port, pa on the primary IP and alternate
// port, ap on the alternate IP and primary port, aa on the alternate IP and
// alternate port. Each must be bound to a specific IP (not a wildcard), since
// the server announces the addresses in RESPONSE-ORIGIN and OTHER-ADDRESS.
// It closes the four sockets when it returns (also when it refuses them),
// and always returns a non-nil error, ErrServerClosed after Close.
func (s *Server) ServeRFC5780(pp, pa, ap, aa net.PacketConn) error {
	pcs := []net.PacketConn{pp, pa, ap, aa}
	if err := checkFour(pcs); err != nil {
		for _, pc := range pcs {
			if pc != nil {
				pc.Close()
			}
		}
		return err
	}
	return s.servePackets(pcs)
}

// checkFour validates the sockets given to ServeRFC5780.
func checkFour(pcs []net.PacketConn) error {
	for i, pc := range pcs {
		if pc == nil {
			return fmt.Errorf("nat: ServeRFC5780: socket %d is nil", i)
		}
	}
	var addrs [4]netip.AddrPort
	for i, pc := range pcs {
		addrs[i] = netcore.AddrPort(pc.LocalAddr())
		if !addrs[i].IsValid() || addrs[i].Addr().IsUnspecified() {
			return fmt.Errorf("nat: ServeRFC5780: socket %d is bound to %v, not to a specific IP", i, pc.LocalAddr())
		}
	}
	switch {
	case addrs[0].Addr() != addrs[1].Addr() || addrs[2].Addr() != addrs[3].Addr():
		return errors.New("nat: ServeRFC5780: pp and pa, and ap and aa, must share an IP")
	case addrs[0].Port() != addrs[2].Port() || addrs[1].Port() != addrs[3].Port():
		return errors.New("nat: ServeRFC5780: pp and ap, and pa and aa, must share a port")
	case addrs[0].Addr() == addrs[2].Addr() || addrs[0].Port() == addrs[1].Port():
		return errors.New("nat: ServeRFC5780: the alternate address must differ from the primary in IP and port")
	}
	return nil
}

func (s *Server) servePackets(pcs []net.PacketConn) error {
	if err := s.track(pcs, nil); err != nil {
		return err
	}
	defer s.wg.Done()
	defer s.untrack(pcs, nil)
	g := &socketGroup{rfc5780: len(pcs) == 4}
	for i, pc := range pcs {
		g.conns[i] = pc
		g.addrs[i] = netcore.AddrPort(pc.LocalAddr())
	}
	// Several readers per socket: answering is a read and a write system
	// call, so one reader leaves the other cores idle under load.
	readers := max(runtime.GOMAXPROCS(0), 1)
	errs := make(chan error, len(pcs)*readers)
	var wg sync.WaitGroup
	for i := range pcs {
		for range readers {
			wg.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer wg.Done()
				errs <- s.readLoop(g, i)
			}()
		}
	}
	wg.Wait()
	close(errs)
	var first error
	for err := range errs {
		if first == nil || errors.Is(first, ErrServerClosed) {
			first = err
		}
	}
	if s.isClosed() {
		return ErrServerClosed
	}
	return first
}

// socketGroup is the set of sockets one ServePacket or ServeRFC5780 call serves.
type socketGroup struct {
	rfc5780 bool
	conns   [4]net.PacketConn
	addrs   [4]netip.AddrPort
}

func (s *Server) readLoop(g *socketGroup, idx int) error {
	pc := g.conns[idx]
	udp, _ := pc.(*net.UDPConn)
	buf := make([]byte, maxMessage)
	var out []byte
	for {
		var (
			n    int
			from netip.AddrPort
			err  error
		)
		if udp != nil {
			n, from, err = udp.ReadFromUDPAddrPort(buf)
		} else {
			var a net.Addr
			n, a, err = pc.ReadFrom(buf)
			from = netcore.AddrPort(a)
		}
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if netcore.IsClosed(err) || (errors.As(err, &ne) && ne.Timeout()) {
				return fmt.Errorf("nat: read: %w", err)
			}
			// ICMP errors surface as read errors on some systems, and a
			// process out of descriptors fails reads with EMFILE: count,
			// pause a little for the latter, keep serving.
			s.stats.readErrors.Add(1)
			s.logger().Debug("nat: read error", "err", err)
			if netcore.IsTemporary(err) {
				select {
				case <-time.After(readErrorPause):
				case <-s.done:
				}
			}
			continue
		}
		from = netcore.Canonical(from)
		if !from.IsValid() {
			continue
		}
		if !s.allow(from.Addr()) {
			s.stats.rateLimited.Add(1)
			continue
		}
		r := s.respond(out[:0], buf[:n], from, idx, g.addrs, g.rfc5780, false)
		out = r.data
		if len(out) == 0 {
			continue
		}
		dst := g.conns[r.via]
		if u, ok := dst.(*net.UDPConn); ok {
			_, err = u.WriteToUDPAddrPort(out, r.to)
		} else {
			_, err = dst.WriteTo(out, net.UDPAddrFromAddrPort(r.to))
		}
		if err != nil {
			s.logger().Debug("nat: write failed", "to", r.to, "err", err)
		}
	}
}

// ListenAndServe listens on addr ("IP:port"; empty means Primary) over UDP
// and TCP and serves until Close. With Alternate set it is an RFC 5780
// server on four addresses (both IPs × both ports; addr must then name a
// specific IP); otherwise a plain STUN server on addr. A port that another
// socket holds is an error (no SO_REUSEPORT: the kernel would otherwise
// split the requests between the two servers). It always returns a non-nil
// error, ErrServerClosed after Close.
func (s *Server) ListenAndServe(addr string) error {
	primary := s.Primary
	if addr != "" {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return fmt.Errorf("nat: ListenAndServe: %w", err)
		}
		primary = netcore.Canonical(ap)
	}
	if !primary.IsValid() {
		return errors.New("nat: ListenAndServe: no address (addr empty and Primary not set)")
	}
	addrs := fourAddrs(primary, s.Alternate)
	n := 1
	if s.Alternate.IsValid() {
		n = 4
		if err := checkPair(primary, s.Alternate); err != nil {
			return err
		}
	}
	var (
		pcs   []net.PacketConn
		lns   []net.Listener
		close = func() {
			for _, pc := range pcs {
				pc.Close()
			}
			for _, l := range lns {
				l.Close()
			}
		}
	)
	for i := range n {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addrs[i]))
		if err != nil {
			close()
			return fmt.Errorf("nat: listen: %w", err)
		}
		pcs = append(pcs, pc)
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addrs[i]))
		if err != nil {
			close()
			return fmt.Errorf("nat: listen: %w", err)
		}
		lns = append(lns, l)
	}
	var four *[4]netip.AddrPort
	if n == 4 {
		four = &addrs
	}
	errs := make(chan error, 1+len(lns))
	var wg sync.WaitGroup
	wg.Add(1 + len(lns))
	go func() {
		defer wg.Done()
		if n == 4 {
			errs <- s.ServeRFC5780(pcs[0], pcs[1], pcs[2], pcs[3])
		} else {
			errs <- s.ServePacket(pcs[0])
		}
	}()
	for _, l := range lns {
		go func() {
			defer wg.Done()
			errs <- s.serveTCP(l, four)
		}()
	}
	err := <-errs
	if !errors.Is(err, ErrServerClosed) {
		close()
	}
	wg.Wait()
	return err
}

func checkPair(p, a netip.AddrPort) error {
	if p.Addr() == a.Addr() || p.Port() == a.Port() {
		return fmt.Errorf("nat: alternate address %v must differ from primary %v in IP and port", a, p)
	}
	if p.Port() == 0 || a.Port() == 0 {
		return errors.New("nat: an RFC 5780 server needs fixed ports (not 0) for both addresses")
	}
	if p.Addr().IsUnspecified() || a.Addr().IsUnspecified() {
		return errors.New("nat: an RFC 5780 server needs specific IPs, not a wildcard")
	}
	return nil
}

// fourAddrs lists the RFC 5780 socket addresses from a primary and an
// alternate address.
func fourAddrs(p, a netip.AddrPort) [4]netip.AddrPort {
	return [4]netip.AddrPort{
		p,
		netip.AddrPortFrom(p.Addr(), a.Port()),
		netip.AddrPortFrom(a.Addr(), p.Port()),
		a,
	}
}

// Close closes every socket, listener and TCP connection the server is
// serving and waits for its goroutines to return.
func (s *Server) Close() error {
	s.closeAll()
	s.wg.Wait()
	return nil
}

// Shutdown is Close bounded by ctx: it returns ctx.Err() if the goroutines
// have not returned when ctx is done (they still will, shortly).
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeAll()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.done != nil {
		close(s.done)
	}
	for pc := range s.packets {
		pc.Close()
	}
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
}
