package proxy

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// AgentEdge is an edge an [Agent] keeps a tunnel to.
type AgentEdge struct {
	// Addr is the edge's agent listener, "host:port": UDP for QUIC, TCP for
	// the fallback, usually the same port number.
	Addr string
	// TCPAddr optionally gives the TCP fallback's address when it is not
	// Addr.
	TCPAddr string
	// PublicKey is the edge's ed25519 key, pinned. Required.
	PublicKey ed25519.PublicKey
}

// Agent is the home end of the tunnel: it keeps a connection to each of its
// edges (QUIC, or TLS over TCP where UDP is blocked), claims its names on
// them, and serves the client connections the edges carry as streams.
//
// Each stream becomes a net.Conn whose RemoteAddr is the real client's
// address and LocalAddr the address the client connected to at the edge, so
// that a [Proxy] serving [Agent.Listener] routes, limits and logs by the
// real client and a [Pool] with ProxyProtocol sends it to the backend. With
// Target set, streams go there instead, with the [Hello] the edge saw.
//
// A lost connection is redialled with jittered exponential backoff from
// 250 ms to 5 s. The zero value connects nowhere: set Key, Edges and Names.
// Do not change the fields after [Agent.Run]. Safe for concurrent use.
type Agent struct {
	// Key is the agent's ed25519 key; the edges pin its public half. Required.
	Key ed25519.PrivateKey

	// Edges lists the edges to keep a connection to, all at once.
	Edges []AgentEdge

	// Names lists the names to claim ("blog.example.com", "*.example.com").
	// An edge grants those its configuration allows; streams for other
	// names are refused.
	Names []string

	// Target optionally receives each stream; if nil, streams are returned
	// by the Accept of [Agent.Listener].
	Target Target

	// Transport optionally restricts the transport; the zero value is
	// TransportAuto.
	Transport TunnelTransport

	// FallbackDelay optionally sets how long TransportAuto waits for QUIC
	// before dialling TLS over TCP as well; if zero, 1 s. The first to
	// connect is kept.
	FallbackDelay time.Duration

	// KeepAlive optionally sets the interval of keepalive packets, which
	// keep the NAT's mapping of the tunnel open; if zero, 15 s. Set it below
	// the NAT's mapping lifetime (half of what the nat package measured,
	// say). The tunnel is declared dead after three silent intervals.
	KeepAlive time.Duration

	// MaxStreams optionally bounds the streams open at once, over all
	// edges; if zero, 4096. Negative: no limit.
	MaxStreams int

	// DialContext optionally dials the edges over TCP; if nil, a
	// net.Dialer is used.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// ListenPacket optionally opens the UDP socket for a QUIC connection
	// ("udp", ":0"); if nil, net.ListenPacket is used.
	ListenPacket func(network, addr string) (net.PacketConn, error)

	// Logger optionally specifies the logger; if nil, slog.Default().
	Logger *slog.Logger

	initOnce sync.Once
	accepts  chan net.Conn
	listener *agentListener

	mu       sync.Mutex
	running  bool
	closed   bool
	closeCh  chan struct{}
	status   []AgentEdgeStatus
	changed  chan struct{} // closed and replaced on every status change
	sessions map[tunnelSession]struct{}
	wg       sync.WaitGroup
	streams  atomic.Int64
}

// AgentEdgeStatus reports the tunnel to one edge.
type AgentEdgeStatus struct {
	Addr      string
	Connected bool
	Transport TunnelTransport // while connected
	Granted   []string        // names the edge granted
	Refused   []string        // names the edge refused
	Since     time.Time       // of the current state
	Err       string          // the last dial or claim error, while disconnected
}

func (a *Agent) init() {
	a.initOnce.Do(func() {
		a.closeCh = make(chan struct{})
		a.changed = make(chan struct{})
		a.sessions = map[tunnelSession]struct{}{}
		a.accepts = make(chan net.Conn)
		a.listener = &agentListener{a: a, closed: make(chan struct{})}
		for _, e := range a.Edges {
			a.status = append(a.status, AgentEdgeStatus{Addr: e.Addr})
		}
	})
}

func (a *Agent) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

func (a *Agent) keepAlive() time.Duration {
	if a.KeepAlive > 0 {
		return a.KeepAlive
	}
	return defaultTunnelKeepAlive
}

func (a *Agent) fallbackDelay() time.Duration {
	if a.FallbackDelay > 0 {
		return a.FallbackDelay
	}
	return time.Second
}

// Backoff bounds: the first retry comes quickly (an edge restart is healed
// in well under a second), the longest wait keeps a restarted edge's
// agents back within 5 s without hammering a dead one.
const (
	minAgentBackoff = 250 * time.Millisecond
	maxAgentBackoff = 5 * time.Second
)

// nextBackoff doubles d within the bounds; the wait is d with up to half of
// it removed at random, so that many agents do not redial in step.
func nextBackoff(d time.Duration) (next, wait time.Duration) {
	next = min(max(2*d, minAgentBackoff), maxAgentBackoff)
	return next, next - rand.N(next/2)
}

// ErrAgentClosed is returned by [Agent.Run] after [Agent.Close].
var ErrAgentClosed = errors.New("proxy: agent closed")

// Run keeps the tunnels to all edges until ctx ends or [Agent.Close] is
// called; it returns ctx.Err() or [ErrAgentClosed]. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	a.init()
	if err := a.check(); err != nil {
		return err
	}
	a.mu.Lock()
	if a.running || a.closed {
		a.mu.Unlock()
		return errors.New("proxy: agent: Run called twice or after Close")
	}
	a.running = true
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, e := range a.Edges {
		tlsConf, err := clientTLS(a.Key, e.PublicKey)
		if err != nil {
			return err
		}
		a.wg.Go(func() { a.keep(ctx, i, e, tlsConf) })
	}
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-a.closeCh:
		err = ErrAgentClosed
	}
	cancel()
	a.closeSessions()
	a.wg.Wait()
	return err
}

func (a *Agent) check() error {
	var errs []error
	if len(a.Key) != ed25519.PrivateKeySize {
		errs = append(errs, errors.New("proxy: agent: no Key"))
	}
	if len(a.Edges) == 0 {
		errs = append(errs, errors.New("proxy: agent: no Edges"))
	}
	for i, e := range a.Edges {
		if len(e.PublicKey) != ed25519.PublicKeySize {
			errs = append(errs, fmt.Errorf("proxy: agent: edge %d (%s): no PublicKey", i, e.Addr))
		}
		if _, _, err := net.SplitHostPort(e.Addr); err != nil {
			errs = append(errs, fmt.Errorf("proxy: agent: edge %d: %w", i, err))
		}
	}
	if len(a.Names) == 0 || len(a.Names) > maxClaims {
		errs = append(errs, fmt.Errorf("proxy: agent: %d names, want 1 to %d", len(a.Names), maxClaims))
	}
	for _, n := range a.Names {
		if _, err := normalizeClaim(n); err != nil {
			errs = append(errs, fmt.Errorf("proxy: agent: name %q: %w", n, err))
		}
	}
	return netcore.Join(errs...)
}

// Close stops the agent: Run returns, every tunnel and stream is closed.
func (a *Agent) Close() error {
	a.init()
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.closeCh)
	}
	a.mu.Unlock()
	a.listener.Close()
	a.closeSessions()
	a.wg.Wait()
	return nil
}

func (a *Agent) closeSessions() {
	a.mu.Lock()
	var ss []tunnelSession
	for s := range a.sessions {
		ss = append(ss, s)
	}
	a.mu.Unlock()
	for _, s := range ss {
		s.close("agent closing")
	}
}

// Status returns the state of the tunnel to each edge, in Edges order.
func (a *Agent) Status() []AgentEdgeStatus {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.status)
	for i := range out {
		out[i].Granted = slices.Clone(out[i].Granted)
		out[i].Refused = slices.Clone(out[i].Refused)
	}
	return out
}

func (a *Agent) setStatus(i int, f func(*AgentEdgeStatus)) {
	a.mu.Lock()
	f(&a.status[i])
	a.status[i].Since = time.Now()
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

// statusChanged returns a channel closed at the next status change.
func (a *Agent) statusChanged() <-chan struct{} {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// keep holds the tunnel to edge i until ctx ends.
func (a *Agent) keep(ctx context.Context, i int, e AgentEdge, tlsConf *tls.Config) {
	var backoff time.Duration
	for ctx.Err() == nil {
		s, granted, refused, err := a.connect(ctx, e, tlsConf)
		if err == nil {
			backoff = 0
			a.logger().Info("proxy: agent: connected", "edge", e.Addr, "transport", s.transport().String(),
				"granted", granted, "refused", refused)
			if len(refused) > 0 {
				a.logger().Error("proxy: agent: edge refused names", "edge", e.Addr, "names", refused)
			}
			a.setStatus(i, func(st *AgentEdgeStatus) {
				*st = AgentEdgeStatus{Addr: e.Addr, Connected: true, Transport: s.transport(), Granted: granted, Refused: refused}
			})
			err = a.serve(ctx, s, granted)
			a.untrack(s)
			a.setStatus(i, func(st *AgentEdgeStatus) {
				st.Connected, st.Transport, st.Err = false, TransportUnknown, errString(err)
			})
			if ctx.Err() != nil {
				return
			}
			a.logger().Warn("proxy: agent: tunnel lost", "edge", e.Addr, "err", err)
		} else {
			if ctx.Err() != nil {
				return
			}
			a.logger().Debug("proxy: agent: connect failed", "edge", e.Addr, "err", err)
			a.setStatus(i, func(st *AgentEdgeStatus) { st.Connected, st.Err = false, err.Error() })
		}
		var wait time.Duration
		backoff, wait = nextBackoff(backoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (a *Agent) track(s tunnelSession) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.sessions[s] = struct{}{}
	return true
}

func (a *Agent) untrack(s tunnelSession) {
	s.close("")
	a.mu.Lock()
	delete(a.sessions, s)
	a.mu.Unlock()
}

// connect dials the edge and claims the names.
func (a *Agent) connect(ctx context.Context, e AgentEdge, tlsConf *tls.Config) (tunnelSession, []string, []string, error) {
	s, err := a.dial(ctx, e, tlsConf)
	if err != nil {
		return nil, nil, nil, err
	}
	if !a.track(s) {
		s.close("agent closing")
		return nil, nil, nil, ErrAgentClosed
	}
	granted, refused, err := a.claim(ctx, s)
	if err != nil {
		a.untrack(s)
		return nil, nil, nil, err
	}
	return s, granted, refused, nil
}

// claimTimeout bounds the claim exchange after the handshake.
const claimTimeout = 10 * time.Second

func (a *Agent) claim(ctx context.Context, s tunnelSession) (granted, refused []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	ctrl, err := s.open(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: agent: claim: %w", err)
	}
	// The control stream lives as long as the session; closing the
	// session closes it.
	stop := context.AfterFunc(ctx, func() { ctrl.SetDeadline(time.Now()) })
	defer stop()
	msg, err := encodeClaim(a.Names)
	if err != nil {
		return nil, nil, err
	}
	if _, err := ctrl.Write(msg); err != nil {
		return nil, nil, fmt.Errorf("proxy: agent: claim: %w", err)
	}
	body, err := readMsg(ctrl, magicClaimReply)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: agent: claim: %w", err)
	}
	st, err := parseClaimReply(body, len(a.Names))
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: agent: claim: %w", err)
	}
	for i, n := range a.Names {
		if st[i] == claimOK {
			p, _ := normalizeClaim(n)
			granted = append(granted, p)
		} else {
			refused = append(refused, n)
		}
	}
	return granted, refused, nil
}

// dial connects to the edge over the configured transports.
func (a *Agent) dial(ctx context.Context, e AgentEdge, tlsConf *tls.Config) (tunnelSession, error) {
	switch a.Transport {
	case TransportQUIC:
		return a.dialQUIC(ctx, e, tlsConf)
	case TransportTCP:
		return a.dialTCP(ctx, e, tlsConf)
	}
	// Auto: QUIC first; TCP as well once the fallback delay passed or QUIC
	// failed. The first session up wins, the other is closed.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		s   tunnelSession
		err error
	}
	results := make(chan result, 2)
	go func() {
		s, err := a.dialQUIC(ctx, e, tlsConf)
		results <- result{s, err}
	}()
	running, tcpStarted := 1, false
	startTCP := func() {
		if !tcpStarted {
			tcpStarted = true
			running++
			go func() {
				s, err := a.dialTCP(ctx, e, tlsConf)
				results <- result{s, err}
			}()
		}
	}
	t := time.NewTimer(a.fallbackDelay())
	defer t.Stop()
	var won tunnelSession
	var errs []error
	for running > 0 {
		select {
		case <-t.C:
			startTCP()
		case r := <-results:
			running--
			switch {
			case r.err != nil:
				errs = append(errs, r.err)
				if won == nil {
					startTCP()
				}
			case won == nil:
				won = r.s
				cancel()
			default:
				r.s.close("duplicate")
			}
		}
	}
	if won != nil {
		return won, nil
	}
	return nil, netcore.Join(errs...)
}

func (a *Agent) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  claimTimeout,
		MaxIdleTimeout:        tunnelIdleTimeout(a.keepAlive()),
		KeepAlivePeriod:       a.keepAlive(),
		MaxIncomingStreams:    int64(max(limitOr(a.MaxStreams, 4096), 1024)),
		MaxIncomingUniStreams: -1,
	}
}

func (a *Agent) dialQUIC(ctx context.Context, e AgentEdge, tlsConf *tls.Config) (tunnelSession, error) {
	raddr, err := net.ResolveUDPAddr("udp", e.Addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: agent: quic: %w", err)
	}
	listen := a.ListenPacket
	if listen == nil {
		listen = net.ListenPacket
	}
	network := "udp4"
	if raddr.IP.To4() == nil {
		network = "udp6"
	}
	pc, err := listen(network, ":0")
	if err != nil {
		return nil, fmt.Errorf("proxy: agent: quic: %w", err)
	}
	tr := &quic.Transport{Conn: pc}
	owned := func() { tr.Close(); pc.Close() }
	c, err := tr.Dial(ctx, raddr, tlsConf, a.quicConfig())
	if err != nil {
		owned()
		return nil, fmt.Errorf("proxy: agent: quic: %w", err)
	}
	return newQUICSession(c, owned)
}

func (a *Agent) dialTCP(ctx context.Context, e AgentEdge, tlsConf *tls.Config) (tunnelSession, error) {
	dial := a.DialContext
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	addr := e.Addr
	if e.TCPAddr != "" {
		addr = e.TCPAddr
	}
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: agent: tcp: %w", err)
	}
	hctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	tc := tls.Client(c, tlsConf)
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("proxy: agent: tcp: %w", err)
	}
	return newYamuxSession(tc, true, a.keepAlive())
}

// serve accepts the edge's streams until the session ends.
func (a *Agent) serve(ctx context.Context, s tunnelSession, granted []string) error {
	for {
		st, err := s.accept(ctx)
		if err != nil {
			return err
		}
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			st.Close()
			return ErrAgentClosed
		}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			a.handleStream(ctx, st, granted)
		}()
	}
}

// streamHeaderTimeout bounds the wait for a stream's header; the edge sends
// it with the stream's first bytes.
const streamHeaderTimeout = 10 * time.Second

func (a *Agent) handleStream(ctx context.Context, st net.Conn, granted []string) {
	st.SetReadDeadline(time.Now().Add(streamHeaderTimeout))
	body, err := readMsg(st, magicStream)
	var h *streamHeader
	if err == nil {
		h, err = parseStreamHeader(body)
	}
	if err != nil {
		a.logger().Warn("proxy: agent: bad stream header from edge", "edge", st.RemoteAddr(), "err", err)
		st.Close()
		return
	}
	st.SetReadDeadline(time.Time{})
	if !slices.ContainsFunc(granted, func(p string) bool { return patternMatches(p, h.ServerName) }) {
		a.logger().Warn("proxy: agent: edge sent a stream for a name not claimed", "edge", st.RemoteAddr(), "name", h.ServerName)
		a.refuse(st, streamNotMine)
		return
	}
	if m := limitOr(a.MaxStreams, 4096); m > 0 && a.streams.Load() >= int64(m) {
		a.logger().Debug("proxy: agent: stream limit", "name", h.ServerName, "src", h.Source)
		a.refuse(st, streamBusy)
		return
	}
	a.streams.Add(1)
	tc := &tunnelConn{Conn: st, remote: tcpAddr(h.Source), local: tcpAddr(h.Dest), release: func() { a.streams.Add(-1) }}
	if a.Target != nil {
		if _, err := st.Write([]byte{streamOK}); err != nil {
			tc.Close()
			return
		}
		a.Target.HandleConn(ctx, &Conn{Conn: tc, Hello: Hello{
			Protocol: h.Protocol, ServerName: h.ServerName, ALPN: h.ALPN, Source: h.Source, Dest: h.Dest,
		}})
		return
	}
	// The OK goes first: the consumer may write as soon as it has the conn.
	if _, err := st.Write([]byte{streamOK}); err != nil {
		tc.Close()
		return
	}
	t := time.NewTimer(streamHeaderTimeout)
	defer t.Stop()
	select {
	case a.accepts <- tc:
	case <-a.listener.closed:
		tc.Close()
	case <-ctx.Done():
		tc.Close()
	case <-t.C:
		a.logger().Warn("proxy: agent: nobody accepts streams", "name", h.ServerName)
		tc.Close()
	}
}

func (a *Agent) refuse(st net.Conn, code byte) {
	st.SetWriteDeadline(time.Now().Add(time.Second))
	st.Write([]byte{code})
	st.Close()
}

func tcpAddr(ap netip.AddrPort) *net.TCPAddr {
	if !ap.IsValid() {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}

// Listener returns the listener on which Accept returns the streams (when
// Target is nil), for [Proxy.Serve]. Closing it stops the handing out of
// streams, not the agent.
func (a *Agent) Listener() net.Listener {
	a.init()
	return a.listener
}

type agentListener struct {
	a      *Agent
	once   sync.Once
	closed chan struct{}
}

// tunnelAddr is the listener's address: not a socket.
type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "tunnel" }
func (tunnelAddr) String() string  { return "tunnel" }

func (l *agentListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.a.accepts:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *agentListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *agentListener) Addr() net.Addr { return tunnelAddr{} }
