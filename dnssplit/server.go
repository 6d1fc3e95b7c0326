package dnssplit

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
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

	// RateLimit optionally limits UDP responses per client prefix; if nil
	// there is no limit.
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
	// zero, 256 is used. Connections beyond it are closed at once.
	MaxTCPConns int

	// MaxTCPConnsPerSource optionally bounds open TCP connections from one
	// client address per listener; if zero, 8 is used; negative means no
	// bound. Connections beyond it are closed at once.
	MaxTCPConnsPerSource int

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

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	packets   map[net.PacketConn]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup // serving goroutines
	bgWG      sync.WaitGroup // background goroutines
	bgCtx     context.Context
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
		if s.RateLimit != nil {
			s.limiter = newLimiter(*s.RateLimit)
		}
		s.listeners = map[net.Listener]struct{}{}
		s.packets = map[net.PacketConn]struct{}{}
		s.conns = map[net.Conn]struct{}{}
		if s.Transfer != nil && len(s.Transfer.Notify) > 0 {
			s.notifier = newNotifier(s)
		}
		s.stats.init()
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

// track registers a socket; it reports false if the server is closed.
func (s *Server) track(l net.Listener, pc net.PacketConn, c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
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

// ServePacket answers queries arriving on pc until Shutdown or Close. It
// reads and writes datagrams in batches (recvmmsg/sendmmsg on Linux),
// replies from the address each query arrived on, and lets at most Workers
// queries wait on upstreams at once. It may be called for several sockets
// bound to one address with SO_REUSEPORT (see ListenAndServe). It closes pc
// when it returns, and returns ErrServerClosed after Shutdown or Close.
func (s *Server) ServePacket(pc net.PacketConn) error {
	s.init()
	if !s.track(nil, pc, nil) {
		pc.Close()
		return ErrServerClosed
	}
	s.wg.Add(1)
	defer s.wg.Done()
	defer s.untrack(nil, pc, nil)
	defer pc.Close()
	return s.servePackets(newPacketIO(pc), pc)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// servePackets runs one reader (batches of datagrams), Workers handlers and
// one writer (batches of replies). The reader blocks when every worker is
// busy and the queue is full, so a flood waits (and is dropped) in the
// kernel's socket buffer rather than in goroutines.
func (s *Server) servePackets(pio packetIO, pc net.PacketConn) error {
	workers := s.workers()
	pool := sync.Pool{New: func() any { return &packet{buf: make([]byte, maxUDPRead)} }}
	jobs := make(chan *packet, workers)
	replies := make(chan *packet, workers)
	var wg, wwg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wp := new(pass)
			wctx := context.WithValue(s.bgCtx, passKey{}, wp)
			for p := range jobs {
				*wp = pass{charged: p.charged}
				p.out = s.handle(wctx, p.buf[:p.n], p.src, p.local, false)
				if p.out == nil {
					pool.Put(p)
					continue
				}
				replies <- p
			}
		}()
	}
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		batch := make([]*packet, 0, batchSize)
		for p := range replies {
			batch = append(batch[:0], p)
		more:
			for len(batch) < batchSize {
				select {
				case p, ok := <-replies:
					if !ok {
						break more
					}
					batch = append(batch, p)
				default:
					break more
				}
			}
			if err := pio.writeBatch(batch); err != nil {
				s.logger().Debug("dnssplit: udp write", "err", err)
			}
			for _, p := range batch {
				p.out = nil
				pool.Put(p)
			}
		}
	}()
	err := s.readPackets(pio, &pool, jobs)
	close(jobs)
	wg.Wait()
	close(replies)
	wwg.Wait()
	if s.isClosed() {
		return ErrServerClosed
	}
	return err
}

func (s *Server) readPackets(pio packetIO, pool *sync.Pool, jobs chan<- *packet) error {
	batch := make([]*packet, batchSize)
	for i := range batch {
		batch[i] = pool.Get().(*packet)
	}
	defer func() {
		for _, p := range batch {
			pool.Put(p)
		}
	}()
	// Queries answerable without the network (local data, fresh cache) are
	// answered right here and their replies sent in one batch; only those
	// that must wait for an upstream go to the workers.
	ps := new(pass)
	ictx := context.WithValue(s.bgCtx, passKey{}, ps)
	out := make([]*packet, 0, batchSize)
	for {
		n, err := pio.readBatch(batch)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || s.isClosed() || errors.Is(err, net.ErrClosed) {
				return err
			}
			// Transient errors (ICMP port unreachable reported on the
			// socket, for instance) must not stop the server.
			s.logger().Debug("dnssplit: udp read", "err", err)
			continue
		}
		for i := range n {
			p := batch[i]
			*ps = pass{inline: true}
			p.out = s.handle(ictx, p.buf[:p.n], p.src, p.local, false)
			switch {
			case ps.blocked:
				p.out, p.charged = nil, ps.charged
				jobs <- p
			case p.out != nil:
				out = append(out, p)
			default:
				continue // dropped: keep the buffer
			}
			batch[i] = pool.Get().(*packet)
		}
		if len(out) > 0 {
			if err := pio.writeBatch(out); err != nil {
				s.logger().Debug("dnssplit: udp write", "err", err)
			}
			for i, p := range out {
				p.out = nil
				pool.Put(p)
				out[i] = nil
			}
			out = out[:0]
		}
	}
}

// Serve answers DNS over TCP connections accepted from l until Shutdown or
// Close; it closes l when it returns. Queries on one connection are
// pipelined: answered concurrently and written as they complete.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	if !s.track(l, nil, nil) {
		l.Close()
		return ErrServerClosed
	}
	s.wg.Add(1)
	defer s.wg.Done()
	defer s.untrack(l, nil, nil)
	defer l.Close()
	sem := make(chan struct{}, s.maxTCPConns())
	perSource := s.maxTCPConnsPerSource()
	var (
		srcMu sync.Mutex
		bySrc = map[netip.Addr]int{} // open connections per client address
	)
	release := func(a netip.Addr) {
		srcMu.Lock()
		if bySrc[a]--; bySrc[a] <= 0 {
			delete(bySrc, a)
		}
		srcMu.Unlock()
	}
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Temporary accept errors (EMFILE): back off, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		src := addrPortOf(c.RemoteAddr()).Addr()
		srcMu.Lock()
		full := perSource > 0 && bySrc[src] >= perSource
		if !full {
			bySrc[src]++
		}
		srcMu.Unlock()
		if full {
			s.stats.tcpRejected.Add(1)
			c.Close()
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			release(src)
			s.stats.tcpRejected.Add(1)
			c.Close()
			continue
		}
		if !s.track(nil, nil, c) {
			c.Close()
			<-sem
			release(src)
			return ErrServerClosed
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer release(src)
			defer func() { <-sem }()
			defer s.untrack(nil, nil, c)
			s.serveConn(c)
		}()
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	src := addrPortOf(c.RemoteAddr())
	local := addrPortOf(c.LocalAddr()).Addr()
	var (
		wmu sync.Mutex
		wg  sync.WaitGroup
	)
	defer wg.Wait()
	inflight := make(chan struct{}, tcpPipeline)
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		c.SetWriteDeadline(time.Now().Add(s.tcpIdle()))
		out := make([]byte, 2+len(b))
		binary.BigEndian.PutUint16(out, uint16(len(b)))
		copy(out[2:], b)
		_, err := c.Write(out)
		return err
	}
	var lenBuf [2]byte
	for {
		c.SetReadDeadline(time.Now().Add(s.tcpIdle()))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint16(lenBuf[:])
		if n < 12 {
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		if isTransfer(msg) {
			// A transfer writes several messages; it runs alone.
			wg.Wait()
			if err := s.serveTransfer(msg, src, local, write); err != nil {
				s.logger().Debug("dnssplit: transfer", "client", src, "err", err)
				return
			}
			continue
		}
		inflight <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			if out := s.handle(s.bgCtx, msg, src, local, true); out != nil {
				if err := write(out); err != nil {
					c.Close()
				}
			}
		}()
	}
}

// isTransfer reports whether a raw query asks for AXFR or IXFR.
func isTransfer(msg []byte) bool {
	var h dns.Msg
	if err := h.Unpack(msg); err != nil || len(h.Question) != 1 {
		return false
	}
	t := h.Question[0].Qtype
	return t == dns.TypeAXFR || t == dns.TypeIXFR
}

// Shutdown stops the server: listeners and sockets are closed, queries in
// flight finish (or are abandoned when ctx ends), background goroutines stop
// and the cache is persisted if configured. It waits for every goroutine the
// server started.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
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
	if perr := s.cache.save(); perr != nil {
		err = errors.Join(err, perr)
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
// dns.ServeMux. Zone transfers are refused on this path.
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
	src := addrPortOf(w.RemoteAddr())
	local := addrPortOf(w.LocalAddr()).Addr()
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	out := s.Resolve(s.bgCtx, r, Client{Source: src.Addr(), Local: local}, tcp)
	if out == nil {
		return
	}
	w.WriteMsg(out)
}

// handle answers one raw query; nil means send nothing.
func (s *Server) handle(ctx context.Context, b []byte, src netip.AddrPort, local netip.Addr, tcp bool) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		s.stats.malformed.Add(1)
		// Answer FORMERR when at least the header is readable and the
		// packet is a query; otherwise drop.
		var h dns.Msg
		if len(b) < 12 || b[2]&0x80 != 0 {
			return nil
		}
		h.Id = binary.BigEndian.Uint16(b)
		h.Response = true
		h.Opcode = int(b[2]>>3) & 0xF
		h.Rcode = dns.RcodeFormatError
		out, _ := h.Pack()
		return out
	}
	m := s.Resolve(ctx, req, Client{Source: src.Addr(), Local: local}, tcp)
	if m == nil {
		return nil
	}
	out, err := m.Pack()
	if err != nil {
		s.logger().Debug("dnssplit: pack reply", "err", err)
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		out, _ = m.Pack()
	}
	return out
}
