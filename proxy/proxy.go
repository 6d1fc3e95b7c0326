package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Target receives connections a [Route] matched. [*Pool] is the usual one.
type Target interface {
	// HandleConn owns c from the call on: it must close c before returning.
	// ctx is cancelled when the proxy is closed; HandleConn must then return
	// promptly.
	HandleConn(ctx context.Context, c *Conn)
}

// TargetFunc adapts a function to [Target].
type TargetFunc func(ctx context.Context, c *Conn)

// HandleConn calls f(ctx, c).
func (f TargetFunc) HandleConn(ctx context.Context, c *Conn) { f(ctx, c) }

// Conn is a client connection handed to a [Target]. Routing read the bytes
// in Peeked from the client; Read (and WriteTo, which io.Copy uses) returns
// them first and then what follows, so a Target that copies from the Conn
// sends the backend everything, in order, and cannot forget the peek. A
// Target that writes Peeked itself reads the rest from the embedded
// net.Conn (c.Conn), as the built-in Pool does so that it can splice
// between the two *net.TCPConn.
type Conn struct {
	net.Conn        // the client connection, positioned after Peeked
	Hello    Hello  // what routing saw
	Peeked   []byte // bytes read from Conn while routing; Read returns them first
	replayed int    // how much of Peeked Read has returned
	route    *route // the route that matched
	proxy    *Proxy // for the per-request HTTP re-check and the loop guard
}

// Read returns the peeked bytes not yet returned, then reads the client
// connection.
func (c *Conn) Read(b []byte) (int, error) {
	if c.replayed < len(c.Peeked) {
		n := copy(b, c.Peeked[c.replayed:])
		c.replayed += n
		return n, nil
	}
	return c.Conn.Read(b)
}

// WriteTo writes the peeked bytes not yet returned to w, then copies the
// client connection to w until EOF (spliced when both are *net.TCPConn on
// Linux).
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if c.replayed < len(c.Peeked) {
		m, err := w.Write(c.Peeked[c.replayed:])
		c.replayed += m
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(w, c.Conn)
	return n + m, err
}

// Proxy routes TCP connections by TLS SNI or HTTP Host to [Target]s,
// without terminating TLS. The zero value has no routes; add some, then call
// [Proxy.Serve]. A Proxy is safe for concurrent use; routes may be changed
// while it serves (see [Proxy.SetRoutes]).
//
// Serve detects the protocol from the first byte: a TLS handshake record is
// routed by SNI, an HTTP/1 request by Host; the same Proxy can serve a :443
// and a :80 listener.
type Proxy struct {
	// Logger optionally specifies where denials and errors are logged; if
	// nil, slog.Default() is used. Per-connection detail is at Debug.
	Logger *slog.Logger

	// PeekTimeout optionally bounds the time from accept to a complete
	// ClientHello or request head (slowloris protection); if zero, 5 s, the
	// order of HAProxy's usual tcp-request inspect-delay. The deadline is
	// cleared as soon as the peek ends.
	PeekTimeout time.Duration

	// MaxPeekBytes optionally bounds the bytes read while routing; if zero,
	// 70 KiB: crypto/tls's 64 KiB handshake limit plus record headers. PQ key
	// shares make hellos of ~1.7 KB, most hellos are well under 2 KB.
	MaxPeekBytes int

	// TrustProxyFrom lists the networks whose inbound PROXY headers (v1 or
	// v2) are believed; the header is optional from them. A PROXY header from
	// any other source closes the connection.
	TrustProxyFrom []netip.Prefix

	// MaxPeeksPerSource optionally bounds the connections one source address
	// may have in the routing phase at once; if zero, 32. Negative: no limit.
	// Sources in TrustProxyFrom are exempt.
	MaxPeeksPerSource int

	// MaxPeeksPerNetwork optionally bounds the connections one source
	// network (a /24 for IPv4, a /64 for IPv6: one host owns a whole /64)
	// may have in the routing phase at once; if zero, 256. Negative: no
	// limit. Sources in TrustProxyFrom are exempt.
	MaxPeeksPerNetwork int

	// MaxPendingPeeks optionally bounds the connections in the routing phase
	// at once; if zero, 1024. Negative: no limit. When it is reached, the
	// oldest peek is closed to make room (counted in [Stats].Shed): a
	// legitimate client sends its hello within a round trip, so the oldest
	// are the slow ones.
	MaxPendingPeeks int

	// MaxConns optionally bounds open client connections; if zero, 16384,
	// below the usual file descriptor limit with two descriptors a
	// connection. Negative: no limit.
	MaxConns int

	// MaxConnsPerSource optionally bounds the routed connections one
	// client address may have open at once, over all routes; if zero, 256
	// (a browser opens about 6 per name, and a carrier-grade NAT address
	// shared by dozens of households stays below this). Negative: no limit.
	// The source is the one a trusted PROXY header names; a trusted front
	// proxy that sends none is exempt. A [Route] may set a lower cap of its
	// own.
	MaxConnsPerSource int

	// KeepAlive optionally configures TCP keepalive on client and backend
	// connections; if zero, probes start after 60 s idle, every 15 s, 4
	// times. Set Enable false with Idle negative to disable.
	KeepAlive net.KeepAliveConfig

	// UserTimeout optionally sets TCP_USER_TIMEOUT (Linux): how long sent
	// data may stay unacknowledged before the kernel drops the connection;
	// if zero, 2 min. Negative: leave the system default. Together with
	// KeepAlive it closes connections to peers that vanished (no FIN or
	// RST). It is not an idle timeout: a connection whose two ends are
	// alive but silent stays open, since deadlines are not used after the
	// peek so that Linux splice stays in use.
	UserTimeout time.Duration

	// IdleTimeout optionally bounds how long a routed connection may carry
	// no data in either direction before it is closed, so that two silent
	// but alive peers cannot hold a slot for ever; if zero, 1 h (long
	// enough for an idle SSH or IMAP IDLE session behind it, short enough
	// that abandoned slots come back). Negative: no idle timeout. It is
	// checked by a timer against the kernel's last-data times (TCP_INFO on
	// Linux), not with read deadlines, so splice stays in use.
	IdleTimeout time.Duration

	// HalfCloseTimeout optionally bounds how long the other direction of a
	// routed connection may stay open after one side finished (a client
	// that went away while the backend never answers, or a backend that is
	// done while the client never closes); if zero, 60 s, HAProxy's usual
	// "timeout client-fin"/"server-fin" order. Negative: no bound.
	HalfCloseTimeout time.Duration

	// HTTPIdleTimeout optionally bounds, on a kept-alive plain HTTP
	// connection, the wait for each request head after the first; if zero,
	// 2 min (a browser keeps idle connections for about that long).
	HTTPIdleTimeout time.Duration

	// LocalAddrs optionally lists more of our own addresses (the public one
	// behind a NAT, for instance) that backends must never be: the loop
	// guard already knows the listeners' addresses.
	LocalAddrs []netip.Addr

	// OnReject optionally observes connections closed before reaching a
	// backend. h is nil when nothing was learned. It must not block.
	OnReject func(h *Hello, r Reason)

	public atomic.Pointer[[]netip.Addr]

	initOnce sync.Once
	routes   atomic.Pointer[table]
	routesMu sync.Mutex // serializes route changes
	ids      *uniqueIDs
	helloCfg *tls.Config // shared by the ClientHello parses
	loops    loopGuard
	limits   limiter
	bySource netcore.ConnCounter // routed connections per source; PerAddr set by the first Serve
	stats    counters

	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[net.Conn]struct{}
	pools      map[*Pool]struct{}
	serving    bool           // health checks running
	closed     bool           // Shutdown or Close began: no new Serve
	hardClosed bool           // Close began: no new connection either
	shutdown   chan struct{}  // closed by Shutdown/Close
	serveWG    sync.WaitGroup // Serve loops
	hardCtx    context.Context
	hardCancel context.CancelFunc
	wg         sync.WaitGroup // connection goroutines
	connDone   *sync.Cond
}

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		p.ids = newUniqueIDs()
		p.helloCfg = newCaptureConfig()
		p.listeners = map[*net.Listener]struct{}{}
		p.conns = map[net.Conn]struct{}{}
		p.pools = map[*Pool]struct{}{}
		p.shutdown = make(chan struct{})
		p.hardCtx, p.hardCancel = context.WithCancel(context.Background())
		p.connDone = sync.NewCond(&p.mu)
		p.limits.init()
	})
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

func (p *Proxy) peekTimeout() time.Duration {
	if p.PeekTimeout > 0 {
		return p.PeekTimeout
	}
	return 5 * time.Second
}

func (p *Proxy) maxPeekBytes() int {
	if p.MaxPeekBytes > 0 {
		return p.MaxPeekBytes
	}
	return 70 << 10
}

func limitOr(v, def int) int {
	switch {
	case v > 0:
		return v
	case v < 0:
		return -1
	}
	return def
}

// SetPublicAddrs sets the public addresses (learned at run time, such as
// the NAT's) that the loop guard treats as our own, besides LocalAddrs.
func (p *Proxy) SetPublicAddrs(addrs ...netip.Addr) {
	a := append([]netip.Addr(nil), addrs...)
	p.public.Store(&a)
}

// ownAddrs returns LocalAddrs plus the public addresses.
func (p *Proxy) ownAddrs() []netip.Addr {
	pub := p.public.Load()
	if pub == nil {
		return p.LocalAddrs
	}
	return append(append([]netip.Addr(nil), p.LocalAddrs...), *pub...)
}

// SetRoutes validates routes and, if all are valid, replaces the route table
// atomically. Connections already routed are not touched; on kept-alive HTTP
// connections the next request is matched against the new table.
func (p *Proxy) SetRoutes(routes []Route) error {
	p.init()
	t, err := newTable(routes)
	if err != nil {
		return err
	}
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	p.routes.Store(t)
	p.syncPools(t)
	return nil
}

// Routes returns a copy of the current routes.
func (p *Proxy) Routes() []Route {
	t := p.routes.Load()
	if t == nil {
		return nil
	}
	return append([]Route(nil), t.routes...)
}

// AddRoute validates r and adds it to the routes.
func (p *Proxy) AddRoute(r Route) error {
	p.init()
	p.routesMu.Lock()
	var cur []Route
	if t := p.routes.Load(); t != nil {
		cur = t.routes
	}
	t, err := newTable(append(append([]Route(nil), cur...), r))
	if err == nil {
		p.routes.Store(t)
		p.syncPools(t)
	}
	p.routesMu.Unlock()
	return err
}

// AddSNIRoute routes TLS connections for host ("name", "*.suffix", or "" for
// the default route) to target.
func (p *Proxy) AddSNIRoute(host string, target Target) error {
	return p.AddRoute(Route{Protocol: ProtocolTLS, Host: host, Target: target})
}

// AddHTTPHostRoute routes plain HTTP requests for host to target.
func (p *Proxy) AddHTTPHostRoute(host string, target Target) error {
	return p.AddRoute(Route{Protocol: ProtocolHTTP, Host: host, Target: target})
}

// AddALPNRoute routes TLS connections for host that offer one of protos
// (say "acme-tls/1") to target, before routes for host without ALPN.
func (p *Proxy) AddALPNRoute(host string, protos []string, target Target) error {
	return p.AddRoute(Route{Protocol: ProtocolTLS, Host: host, ALPN: protos, Target: target})
}

// syncPools starts health checks for pools of t and stops those of pools no
// longer routed. Called with routesMu held.
func (p *Proxy) syncPools(t *table) {
	p.mu.Lock()
	if !p.serving || p.closed {
		p.mu.Unlock()
		return
	}
	want := map[*Pool]struct{}{}
	if t != nil {
		for _, r := range t.routes {
			if pl, ok := r.Target.(*Pool); ok {
				want[pl] = struct{}{}
			}
		}
	}
	var start, stop []*Pool
	for pl := range want {
		if _, ok := p.pools[pl]; !ok {
			p.pools[pl] = struct{}{}
			start = append(start, pl)
		}
	}
	for pl := range p.pools {
		if _, ok := want[pl]; !ok {
			delete(p.pools, pl)
			stop = append(stop, pl)
		}
	}
	p.mu.Unlock()
	for _, pl := range start {
		pl.acquire(p)
	}
	// Outside p.mu: release waits for a running check to end.
	for _, pl := range stop {
		pl.release()
	}
}

// Serve accepts connections on l and routes them until [Proxy.Shutdown] or
// [Proxy.Close]; it then returns [ErrServerClosed]. Serve closes l. It
// routes both TLS and plain HTTP, told apart by the first byte.
func (p *Proxy) Serve(l net.Listener) error {
	return p.ServeProtocol(l, ProtocolUnknown)
}

// ServeProtocol is [Proxy.Serve] for a listener that speaks only proto:
// with ProtocolTLS plain HTTP is refused ([ReasonNotTLS]), with ProtocolHTTP
// TLS is ([ReasonBadRequest]). ProtocolUnknown accepts both.
func (p *Proxy) ServeProtocol(l net.Listener, proto Protocol) error {
	p.init()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	p.listeners[&l] = struct{}{}
	p.serveWG.Add(1)
	defer p.serveWG.Done()
	first := !p.serving
	if first {
		p.bySource.PerAddr = max(p.maxConnsPerSource(), 0)
	}
	p.serving = true
	p.mu.Unlock()
	if first {
		p.routesMu.Lock()
		p.syncPools(p.routes.Load())
		p.routesMu.Unlock()
	}
	p.loops.addListener(l.Addr())
	defer func() {
		p.mu.Lock()
		delete(p.listeners, &l)
		p.mu.Unlock()
		p.loops.removeListener(l.Addr())
		l.Close()
	}()

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-p.shutdown:
				return ErrServerClosed
			default:
			}
			if netcore.IsTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.logger().Warn("proxy: accept", "err", err, "retry", backoff)
				select {
				case <-time.After(backoff):
				case <-p.shutdown:
					return ErrServerClosed
				}
				continue
			}
			return err
		}
		backoff = 0
		if !p.track(c) {
			c.Close()
			return ErrServerClosed
		}
		go p.handle(c, proto)
	}
}

// track registers an accepted connection. During a graceful Shutdown the
// connections Accept still returned are served: the kernel completed their
// handshake, closing them would reset them.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hardClosed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

// Close closes the listeners and every connection at once, and waits for
// the proxy's goroutines (health checks included) to end.
func (p *Proxy) Close() error {
	p.init()
	p.beginShutdown()
	p.hardCancel()
	p.mu.Lock()
	p.hardClosed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.stopPools()
	return nil
}

// Shutdown closes the listeners, lets connections in the routing phase
// finish routing, and waits for all connections to end on their own. If ctx
// ends first it closes the rest as [Proxy.Close] does and returns ctx.Err().
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.init()
	p.beginShutdown()
	done := make(chan struct{})
	go func() {
		p.serveWG.Wait() // no connection is tracked after this
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		p.hardCancel()
		p.stopPools()
		return nil
	case <-ctx.Done():
		p.Close()
		<-done
		return ctx.Err()
	}
}

func (p *Proxy) beginShutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.shutdown)
	}
	for l := range p.listeners {
		(*l).Close()
	}
}

func (p *Proxy) stopPools() {
	p.routesMu.Lock() // serializes with syncPools
	defer p.routesMu.Unlock()
	p.mu.Lock()
	pools := p.pools
	p.pools = map[*Pool]struct{}{}
	p.mu.Unlock()
	for pl := range pools {
		pl.release()
	}
}

// handle routes one accepted connection.
func (p *Proxy) handle(c net.Conn, proto Protocol) {
	defer p.untrack(c)
	p.stats.accepted.Add(1)
	open := p.stats.open.Add(1)
	defer p.stats.open.Add(-1)
	src := netcore.AddrPort(c.RemoteAddr())
	if m := limitOr(p.MaxConns, 16384); m > 0 && open > int64(m) {
		p.rejected(c, &Hello{Source: src}, ReasonLimit, nil)
		return
	}
	if p.loops.isOurDial(c) {
		p.rejected(c, &Hello{Source: src}, ReasonLoop, nil)
		return
	}
	lim := peekLimits{
		perSource: limitOr(p.MaxPeeksPerSource, defaultPeeksPerSource),
		perNet:    limitOr(p.MaxPeeksPerNetwork, defaultPeeksPerNetwork),
		total:     limitOr(p.MaxPendingPeeks, defaultPendingPeeks),
	}
	// A front proxy speaks for many clients: not capped per source.
	entry, shed, ok := p.limits.acquire(c, src.Addr(), lim, !p.trusted(src.Addr()))
	if !ok {
		p.rejected(c, &Hello{Source: src}, ReasonLimit, nil)
		return
	}
	if shed {
		p.stats.shed.Add(1)
	}
	setTCPOptions(c, p.KeepAlive, p.UserTimeout)
	pk, err := p.peek(c, src, proto)
	if p.limits.release(entry) {
		err = reject(ReasonLimit, errors.New("slow peek shed to make room"))
	}
	if err == nil && p.loops.isOurDial(c) {
		err = reject(ReasonLoop, nil) // the dial registered itself while we peeked
	}
	isHTTP := len(pk.buf) > 0 && looksLikeHTTP(pk.buf[0]) && methodOK(pk.buf)
	if err != nil {
		if isHTTP {
			replyHTTP(c, ReasonOf(err))
		}
		p.rejected(c, pk.hello, ReasonOf(err), err)
		return
	}
	t := p.routes.Load()
	r, reason := t.match(pk.hello)
	if r == nil {
		if isHTTP {
			replyHTTP(c, reason)
		}
		p.rejected(c, pk.hello, reason, nil)
		return
	}
	if release, ok := p.admitRouted(r, pk.hello, src); !ok {
		if isHTTP {
			replyHTTP(c, ReasonLimit)
		}
		p.rejected(c, pk.hello, ReasonLimit, nil)
		return
	} else {
		defer release()
	}
	p.stats.routed.Add(1)
	if log := p.logger(); log.Enabled(p.hardCtx, slog.LevelDebug) {
		log.Debug("proxy: routed", "src", pk.hello.Source, "name", pk.hello.ServerName,
			"proto", pk.hello.Protocol, "route", r.Host)
	}
	r.Target.HandleConn(p.hardCtx, &Conn{Conn: c, Hello: *pk.hello, Peeked: pk.buf, route: r, proxy: p})
}

// defaultMaxConnsPerSource is documented on Proxy.MaxConnsPerSource.
const defaultMaxConnsPerSource = 256

func (p *Proxy) maxConnsPerSource() int {
	return limitOr(p.MaxConnsPerSource, defaultMaxConnsPerSource)
}

// admitRouted counts a routed connection against the per-source caps of
// the proxy and of r; release undoes it. conn is the connection's own
// remote address (a trusted front proxy without a PROXY header is exempt).
func (p *Proxy) admitRouted(r *route, h *Hello, conn netip.AddrPort) (release func(), ok bool) {
	src := h.Source.Addr()
	if h.Source == conn && p.trusted(src) {
		return func() {}, true
	}
	if p.bySource.Acquire(src) != netcore.Allowed {
		return nil, false
	}
	if r.bySource == nil {
		return func() { p.bySource.Release(src) }, true
	}
	if r.bySource.Acquire(src) != netcore.Allowed {
		p.bySource.Release(src)
		return nil, false
	}
	return func() { r.bySource.Release(src); p.bySource.Release(src) }, true
}

// rejected counts, logs and reports the rejection, then closes c: a client
// that sees the close finds the rejection already counted.
func (p *Proxy) rejected(c net.Conn, h *Hello, r Reason, err error) {
	defer c.Close()
	if r == ReasonUnknown {
		r = ReasonClosed
	}
	p.stats.reject(r)
	switch r {
	case ReasonDenied, ReasonLoop, ReasonBadProxyHeader:
		p.logger().Warn("proxy: connection refused", "reason", r.String(), "src", h.Source, "name", h.ServerName)
	default:
		p.logger().Debug("proxy: connection closed", "reason", r.String(), "src", h.Source, "name", h.ServerName, "err", err)
	}
	if p.OnReject != nil {
		p.OnReject(h, r)
	}
}

// stillRouted reports whether a later request on a kept-alive HTTP
// connection, for host, matches the same target as the first.
func (c *Conn) stillRouted(host string) bool {
	if c.proxy == nil || c.route == nil {
		return true
	}
	h := c.Hello
	h.ServerName = host
	r, _ := c.proxy.routes.Load().match(&h)
	return r != nil && sameTarget(r.Target, c.route.Target)
}

func (c *Conn) httpIdle() time.Duration {
	if c.proxy != nil && c.proxy.HTTPIdleTimeout > 0 {
		return c.proxy.HTTPIdleTimeout
	}
	return 2 * time.Minute
}

func sameTarget(a, b Target) bool {
	if a == nil || b == nil {
		return false
	}
	return reflect.TypeOf(a).Comparable() && a == b
}
