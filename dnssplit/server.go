package dnssplit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ErrServerClosed is returned by Serve and ServePacket after Shutdown or Close.
var ErrServerClosed = errors.New("dnssplit: server closed")

// Defaults, documented next to the fields they fill.
const (
	// defaultUDPSize is the EDNS buffer size advertised and the largest UDP
	// reply sent: 1232 bytes fits the IPv6 minimum MTU without fragmentation
	// (DNS Flag Day 2020).
	defaultUDPSize = 1232
	// defaultWorkers bounds concurrent UDP queries: enough to hide upstream
	// round trips, small enough that a flood queues in the kernel (and is
	// dropped there) instead of growing goroutines without limit.
	defaultWorkers = 128
	// defaultMaxTCPConns bounds open TCP connections.
	defaultMaxTCPConns = 256
	// defaultMaxTCPConnsPerSource bounds one client address's share of
	// them: RFC 7766 clients reuse one pipelined connection, and a
	// secondary transferring zones needs one or two, so 8 is plenty; without
	// it ~256 slow connections from one host shut everyone out of TCP
	// (truncation fallback, zone transfers).
	defaultMaxTCPConnsPerSource = 8
	// defaultMaxTCPConnsPerNetwork bounds one client network's (/24 for
	// IPv4, /56 for IPv6) share: four addresses' worth, so that a few dozen
	// hosts of one network (or one attacker with a /24) hold at most an
	// eighth of the 256 slots.
	defaultMaxTCPConnsPerNetwork = 32
	// defaultTCPIdle is how long an idle TCP connection stays open (RFC 7766
	// suggests seconds, not minutes).
	defaultTCPIdle = 10 * time.Second
	// tcpPipeline bounds queries in flight on one TCP connection.
	tcpPipeline = 16
	// maxUDPRead is the receive buffer: the largest EDNS query we accept.
	maxUDPRead = 4096
)

// Server is a split-horizon DNS server. Its zero value answers every query
// with REFUSED (no views) and is safe to serve; fill in Views and Upstreams.
// A Server implements dns.Handler, so it also plugs into a dns.ServeMux or a
// dns.Server. Exported fields must not change once serving has started; the
// Records of a view may change at any time.
type Server struct {
	// Views are tried in order; the first whose networks contain the client
	// wins, and the last view is the default for clients no view lists.
	Views []*View

	// TrustedProxies lists the senders whose EDNS Client Subnet option is
	// believed for view selection. Everyone else's is ignored.
	TrustedProxies []netip.Prefix

	// Upstreams are the resolvers names outside the local data are
	// forwarded to (for views with Recursion).
	Upstreams []Upstream

	// Policy chooses the order upstreams are tried in. If PolicyUnknown,
	// PolicyFailover is used.
	Policy Policy

	// UpstreamTimeout optionally bounds one attempt at one upstream (a UDP
	// query unanswered after half of it is sent once more); if zero, 2 s is
	// used.
	UpstreamTimeout time.Duration

	// HealthInterval optionally sets how often an upstream marked down is
	// probed; if zero, 5 s is used.
	HealthInterval time.Duration

	// Cache configures the cache of forwarded answers.
	Cache CacheConfig

	// RateLimit optionally sets the response rate limit of UDP replies per
	// client prefix. If nil, 50 responses per second per /24 (IPv4) or /56
	// (IPv6) are allowed with a burst of 100, every second limited query
	// gets a truncated reply, and sources in the Networks of a view with
	// Recursion are exempt (see RateLimit for each default). Set
	// &RateLimit{Disabled: true} to turn the limit off.
	RateLimit *RateLimit

	// Transfer optionally allows zone transfers and sends NOTIFY; if nil,
	// AXFR and IXFR are refused.
	Transfer *Transfer

	// UDPSize optionally sets the EDNS buffer size advertised and the upper
	// bound of UDP replies; if zero, 1232 is used.
	UDPSize int

	// Workers optionally bounds the UDP queries per socket that wait on
	// upstreams at once; if zero, 128 is used. Queries answered from local
	// data or the cache never wait: the reader answers them in batches.
	// When all workers are busy the reader stops reading, and further
	// packets wait (or are dropped) in the kernel's socket buffer.
	Workers int

	// MaxTCPConns optionally bounds open TCP connections per listener; if
	// zero, 256 is used. When all are taken, a new connection replaces the
	// one idle longest (without a query in flight); if every one is
	// answering a query, the new connection is closed at once.
	MaxTCPConns int

	// MaxTCPConnsPerSource optionally bounds open TCP connections from one
	// client address per listener; if zero, 8 is used; negative means no
	// bound. Connections beyond it are closed at once.
	MaxTCPConnsPerSource int

	// MaxTCPConnsPerNetwork optionally bounds open TCP connections from one
	// client network (/24 for IPv4, /56 for IPv6) per listener; if zero, 32
	// is used; negative means no bound. Connections beyond it are closed at
	// once.
	MaxTCPConnsPerNetwork int

	// TCPIdleTimeout optionally sets how long an idle TCP connection is kept;
	// if zero, 10 s is used.
	TCPIdleTimeout time.Duration

	// Dial optionally dials upstreams and secondaries to NOTIFY (in another
	// network namespace, say, or from a chosen source address); if nil, a
	// net.Dialer is used.
	Dial DialFunc

	// CookieSecret optionally keys the server cookies (RFC 7873); servers
	// behind one address should share it. If empty, a random secret is
	// made at start.
	CookieSecret []byte

	// ForwardDoHCanary, if set, forwards use-application-dns.net like any
	// other name. By default clients of a view with Recursion get NXDOMAIN
	// for it: Firefox asks that name before it turns on DNS over HTTPS to
	// its own resolver by itself, and NXDOMAIN tells it this network's DNS
	// matters. Without it, Firefox on the LAN would resolve blog.example.com
	// through a public resolver, get the public address, and hit the
	// missing NAT loopback this package exists to avoid.
	ForwardDoHCanary bool

	// Logger optionally receives the server's log; if nil, slog.Default() is used.
	Logger *slog.Logger

	// swapped holds the views set by SetViews; nil until the first call.
	swapped atomic.Pointer[[]*View]

	initOnce     sync.Once
	randomSecret []byte
	clock        func() time.Time // tests
	cache        *cache
	fwd          *forwarder
	flight       flight
	limiter      *limiter
	stats        stats
	notifier     *notifier
	answers      answers

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	packets   map[net.PacketConn]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup // serving goroutines
	bgWG      sync.WaitGroup // background goroutines
	bgCtx     context.Context
	done      chan struct{} // closed by Shutdown: ends accept loops and read back-offs
	bgCancel  context.CancelFunc
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) udpSize() int {
	if s.UDPSize >= 512 && s.UDPSize <= 65535 {
		return s.UDPSize
	}
	return defaultUDPSize
}

func (s *Server) workers() int {
	if s.Workers > 0 {
		return s.Workers
	}
	return defaultWorkers
}

func (s *Server) maxTCPConns() int {
	if s.MaxTCPConns > 0 {
		return s.MaxTCPConns
	}
	return defaultMaxTCPConns
}

func (s *Server) maxTCPConnsPerSource() int {
	switch {
	case s.MaxTCPConnsPerSource > 0:
		return s.MaxTCPConnsPerSource
	case s.MaxTCPConnsPerSource < 0:
		return 0 // no bound
	}
	return defaultMaxTCPConnsPerSource
}

func (s *Server) maxTCPConnsPerNetwork() int {
	switch {
	case s.MaxTCPConnsPerNetwork > 0:
		return s.MaxTCPConnsPerNetwork
	case s.MaxTCPConnsPerNetwork < 0:
		return 0 // no bound
	}
	return defaultMaxTCPConnsPerNetwork
}

func (s *Server) tcpIdle() time.Duration {
	if s.TCPIdleTimeout > 0 {
		return s.TCPIdleTimeout
	}
	return defaultTCPIdle
}

// init builds the parts that live as long as the server.
func (s *Server) init() {
	s.initOnce.Do(func() {
		s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
		s.randomSecret = newRandomSecret()
		s.cache = newCache(s.Cache)
		if err := s.cache.load(); err != nil {
			s.logger().Warn("dnssplit: loading persisted cache", "path", s.Cache.PersistPath, "err", err)
		}
		s.fwd = newForwarder(s.Upstreams, s.Policy, s.UpstreamTimeout, s.HealthInterval, s.Dial)
		s.fwd.maxTTL = s.cache.maxTTL()
		s.limiter = s.newLimiter()
		s.done = make(chan struct{})
		s.listeners = map[net.Listener]struct{}{}
		s.packets = map[net.PacketConn]struct{}{}
		s.conns = map[net.Conn]struct{}{}
		if s.wantsNotify() {
			s.notifier = newNotifier(s)
		}
		s.stats.init()
		s.stats.refusals.now, s.stats.refusals.log = s.now, s.logger
		s.startBackground()
	})
}

// startBackground starts the goroutines that live as long as the server:
// health probes, cache persistence and NOTIFY senders.
func (s *Server) startBackground() {
	if len(s.Upstreams) > 0 {
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			s.fwd.healthLoop(s.bgCtx, s.logger())
		}()
	}
	if s.Cache.PersistPath != "" {
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			s.persistLoop(s.bgCtx)
		}()
	}
	if s.notifier != nil {
		s.notifier.start(s.bgCtx, &s.bgWG)
	}
}

func (s *Server) persistLoop(ctx context.Context) {
	t := time.NewTicker(persistInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.cache.save(); err != nil {
				s.logger().Warn("dnssplit: persisting cache", "path", s.Cache.PersistPath, "err", err)
			}
		}
	}
}

// track registers a socket and counts its goroutine in s.wg (the caller
// calls s.wg.Done when it ends); it reports false if the server is closed.
// The count is taken under s.mu, so a Shutdown that has marked the server
// closed either sees the socket or is seen by track: never a wg.Add after
// its wg.Wait found zero.
func (s *Server) track(l net.Listener, pc net.PacketConn, c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	switch {
	case l != nil:
		s.listeners[l] = struct{}{}
	case pc != nil:
		s.packets[pc] = struct{}{}
	case c != nil:
		s.conns[c] = struct{}{}
	}
	return true
}

func (s *Server) untrack(l net.Listener, pc net.PacketConn, c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case l != nil:
		delete(s.listeners, l)
	case pc != nil:
		delete(s.packets, pc)
	case c != nil:
		delete(s.conns, c)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops the server: listeners and sockets are closed, queries in
// flight finish (or are abandoned when ctx ends), background goroutines stop
// and the cache is persisted if configured. It waits for every goroutine the
// server started.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for pc := range s.packets {
		pc.SetReadDeadline(time.Unix(1, 0))
	}
	for c := range s.conns {
		c.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.bgCancel()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	s.bgWG.Wait()
	s.fwd.close()
	if perr := s.cache.save(); perr != nil {
		err = netcore.Join(err, perr)
	}
	return err
}

// Close stops the server at once, abandoning queries in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ServeDNS implements dns.Handler, so a Server can run under a dns.Server or
// dns.ServeMux. Zone transfers are refused on this path. A TSIG-signed query
// is verified with Transfer.TSIG and answered signed, or with BADKEY or
// BADSIG, as on the Server's own sockets; the dns.Server needs no
// TsigSecret for it. The handler sees the parsed query only, so the MAC is
// checked over the query packed again: identical to what signers send
// (BIND, Knot, miekg/dns compress nothing in a one-question query), but a
// query whose sender compressed names differently fails with BADSIG here,
// where the Server's own listeners would accept it.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1) // Shutdown waits for queries on this path too
	s.mu.Unlock()
	defer s.wg.Done()
	src := netcore.AddrPort(w.RemoteAddr())
	local := netcore.AddrPort(w.LocalAddr()).Addr()
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if r.IsTsig() != nil {
		raw, err := r.Pack()
		if err != nil {
			return
		}
		if b, _ := s.handleSigned(s.bgCtx, raw, r, src, local, tcp, pass{}); b != nil {
			w.Write(b)
		}
		return
	}
	out := s.Resolve(s.bgCtx, r, Client{Source: src.Addr(), Local: local}, tcp)
	if out == nil {
		return
	}
	w.WriteMsg(out)
}
