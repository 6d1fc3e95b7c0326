package proxy

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/quic-go/quic-go"
)

// EdgeAgent is an agent an [Edge] accepts: its pinned key and the names it
// may claim.
type EdgeAgent struct {
	// Name identifies the agent in logs and status.
	Name string
	// PublicKey is the agent's ed25519 key. Required.
	PublicKey ed25519.PublicKey
	// Names lists the names the agent may claim: exact ("blog.example.com")
	// or wildcards ("*.home.example.com", which also allows claiming any
	// name or wildcard below it). Any other claim is refused and logged.
	Names []string
	// MaxStreams optionally bounds the client connections open through the
	// agent at once; if zero, 4096. Negative: no limit. A connection over
	// the limit goes to another agent holding the name, or fails.
	MaxStreams int
}

func (a *EdgeAgent) maxStreams() int { return limitOr(a.MaxStreams, 4096) }

// Edge is the public end of the tunnel: agents behind NATs that allow no
// inbound connection dial it ([Edge.ServeQUIC], [Edge.ServeTCP]) and claim
// names, and the Edge is a [Target] for the [Proxy] on the public machine:
// a routed connection is carried as a stream to an agent holding its name,
// with the client's address, the address it connected to, the name and the
// ALPN in a small header before the client's bytes. TLS is passed through
// untouched, so the certificate and keys stay at home.
//
// Agents holding the same name form a pool: a connection goes to the one
// with the fewest open streams, and to the next if that one refuses or does
// not answer within OpenTimeout. When nobody holds the name the client gets
// a fast failure: 503 for plain HTTP, a close for TLS, counted by the proxy
// as [ReasonBackendDown].
//
// The zero value accepts no agent: set Key and Agents. Do not change the
// fields after first use. An Edge is safe for concurrent use.
type Edge struct {
	// Key is the edge's ed25519 key; agents pin its public half. Required.
	Key ed25519.PrivateKey

	// Agents lists the agents allowed to connect.
	Agents []EdgeAgent

	// KeepAlive optionally sets the interval of keepalive probes on agent
	// connections (the agent sends its own as well); if zero, 15 s.
	KeepAlive time.Duration

	// OpenTimeout optionally bounds the wait for an agent to accept a
	// stream before the next agent is tried; if zero, 5 s.
	OpenTimeout time.Duration

	// HandshakeTimeout optionally bounds an agent's TLS handshake and claim;
	// if zero, 10 s.
	HandshakeTimeout time.Duration

	// MaxHandshakes optionally bounds the agent connections in the
	// handshake at once (anyone can start one); if zero, 64. Negative: no
	// limit.
	MaxHandshakes int

	// Logger optionally specifies the logger; if nil, slog.Default().
	Logger *slog.Logger

	initOnce sync.Once
	initErr  error
	agents   atomic.Pointer[agentSet] // Agents, or the last SetAgents
	tlsConf  *tls.Config

	mu        sync.Mutex
	closed    bool
	sessions  map[*edgeSession]struct{}  // claimed sessions
	claims    map[string][]*edgeSession  // pattern → holders
	pending   map[tunnelSession]struct{} // before their claim
	stoppers  map[*func()]struct{}       // listeners to close
	byAgent   map[string]*edgeSession    // one session per agent public key
	handshake atomic.Int64               // TCP handshakes running
	wg        sync.WaitGroup             // session goroutines
	serveWG   sync.WaitGroup             // Serve loops
	stats     edgeCounters
}

type edgeCounters struct {
	sessions, handshakeFails, claimsRefused, streamsTotal, noAgent, failovers atomic.Uint64
	streams                                                                   atomic.Int64
}

// EdgeStats are an [Edge]'s counters.
type EdgeStats struct {
	Agents            int    // agents connected now
	Sessions          uint64 // agent connections that claimed names, in total
	HandshakeFailures uint64 // agent connections refused before their claim (unknown key, timeout, bad claim)
	ClaimsRefused     uint64 // names refused to agents
	Streams           int64  // client connections carried now
	StreamsTotal      uint64 // client connections carried, in total
	NoAgent           uint64 // client connections failed fast: no agent held the name or took the stream
	Failovers         uint64 // client connections retried on another agent
}

// EdgeAgentStatus reports a connected agent.
type EdgeAgentStatus struct {
	Name      string
	Addr      string // the agent's address as the edge sees it
	Transport TunnelTransport
	Names     []string // claims granted, as patterns ("name", "*.suffix")
	Streams   int64
	Since     time.Time
}

// edgeSession is a connected agent.
type edgeSession struct {
	agent   *EdgeAgent
	sess    tunnelSession
	names   []string // granted patterns, normalized
	streams atomic.Int64
	since   time.Time
	// failedAt is when a stream open last failed (unix nanos; 0: never
	// or since succeeded): such a holder is tried after the others, so a
	// dead tunnel the edge has not noticed yet costs one OpenTimeout, not
	// one per client.
	failedAt atomic.Int64
}

// suspectFor is how long a holder whose stream open failed is tried last:
// longer than the tunnel's idle timeout at the default keepalive (45 s),
// by which the dead tunnel is gone.
const suspectFor = time.Minute

func (es *edgeSession) suspect(now time.Time) bool {
	f := es.failedAt.Load()
	return f != 0 && now.Sub(time.Unix(0, f)) < suspectFor
}

func (e *Edge) init() error {
	e.initOnce.Do(func() {
		e.sessions = map[*edgeSession]struct{}{}
		e.claims = map[string][]*edgeSession{}
		e.pending = map[tunnelSession]struct{}{}
		e.stoppers = map[*func()]struct{}{}
		e.byAgent = map[string]*edgeSession{}
		var errs []error
		if len(e.Key) != ed25519.PrivateKeySize {
			errs = append(errs, errors.New("proxy: edge: no Key"))
		}
		set, err := newAgentSet(e.Agents)
		if err != nil {
			errs = append(errs, err)
		}
		e.agents.Store(set)
		if e.initErr = netcore.Join(errs...); e.initErr != nil {
			return
		}
		e.tlsConf, e.initErr = serverTLS(e.Key, func(k ed25519.PublicKey) bool {
			return e.agent(k) != nil
		})
	})
	return e.initErr
}

// agentSet is the agents an Edge accepts: copies, in order (for Routes),
// and indexed by public key.
type agentSet struct {
	list  []EdgeAgent
	byKey map[string]*EdgeAgent
}

// newAgentSet checks agents and copies them into a set.
func newAgentSet(agents []EdgeAgent) (*agentSet, error) {
	set := &agentSet{list: make([]EdgeAgent, len(agents)), byKey: map[string]*EdgeAgent{}}
	byKey := set.byKey
	var errs []error
	for i := range agents {
		a := &set.list[i]
		*a = agents[i]
		a.Names = slices.Clone(a.Names)
		if len(a.PublicKey) != ed25519.PublicKeySize {
			errs = append(errs, fmt.Errorf("proxy: edge: agent %d (%q): no PublicKey", i, a.Name))
			continue
		}
		if _, dup := byKey[string(a.PublicKey)]; dup {
			errs = append(errs, fmt.Errorf("proxy: edge: agent %d (%q): key listed twice", i, a.Name))
		}
		for _, n := range a.Names {
			if _, err := normalizeClaim(n); err != nil {
				errs = append(errs, fmt.Errorf("proxy: edge: agent %d (%q): name %q: %w", i, a.Name, n, err))
			}
		}
		byKey[string(a.PublicKey)] = a
	}
	return set, netcore.Join(errs...)
}

// agent returns the allowed agent with public key k, or nil.
func (e *Edge) agent(k ed25519.PublicKey) *EdgeAgent {
	if set := e.agents.Load(); set != nil {
		return set.byKey[string(k)]
	}
	return nil
}

// SetAgents replaces the agents the edge accepts while it serves (a
// reload). Connections from then on are checked against the new list. A
// connected agent that is no longer listed, or whose names or stream limit
// changed, is disconnected: it reconnects (with its usual back-off) and
// claims under the new rules, so no name stays held that the list no
// longer grants. Agents whose entry is unchanged keep their connection and
// their streams. On an error (a missing key, a key listed twice, a bad
// name) nothing changes.
func (e *Edge) SetAgents(agents []EdgeAgent) error {
	if err := e.init(); err != nil {
		return err
	}
	set, err := newAgentSet(agents)
	if err != nil {
		return err
	}
	byKey := set.byKey
	e.mu.Lock()
	e.agents.Store(set)
	var drop []*edgeSession
	for es := range e.sessions {
		na := byKey[string(es.agent.PublicKey)]
		if na == nil || na.Name != es.agent.Name || na.MaxStreams != es.agent.MaxStreams || !slices.Equal(na.Names, es.agent.Names) {
			drop = append(drop, es)
			continue
		}
		// Unchanged: the session keeps its (equal) entry.
	}
	for _, es := range drop {
		e.removeLocked(es)
	}
	e.mu.Unlock()
	for _, es := range drop {
		e.logger().Info("proxy: edge: agent disconnected: its entry changed", "agent", es.agent.Name, "addr", es.sess.remoteAddr())
		es.sess.close("authorisation changed")
	}
	return nil
}

func (e *Edge) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.Default()
}

func (e *Edge) keepAlive() time.Duration {
	if e.KeepAlive > 0 {
		return e.KeepAlive
	}
	return defaultTunnelKeepAlive
}

// defaultTunnelKeepAlive is half of the 30 s UDP mapping lifetime many CGNs
// and home routers use for a flow (RFC 4787 asks for 2 min; few comply).
const defaultTunnelKeepAlive = 15 * time.Second

func (e *Edge) openTimeout() time.Duration {
	if e.OpenTimeout > 0 {
		return e.OpenTimeout
	}
	return 5 * time.Second
}

func (e *Edge) handshakeTimeout() time.Duration {
	if e.HandshakeTimeout > 0 {
		return e.HandshakeTimeout
	}
	return 10 * time.Second
}

// PublicKey returns the public half of Key, for the agents to pin.
func (e *Edge) PublicKey() ed25519.PublicKey {
	if len(e.Key) != ed25519.PrivateKeySize {
		return nil
	}
	return e.Key.Public().(ed25519.PublicKey)
}

// Routes returns a TLS and an HTTP route to e for every name the agents may
// claim (Agents, or the list of the last [Edge.SetAgents]), for
// [Proxy.SetRoutes] together with the proxy's other routes. Add Allow
// lists to them as for any route.
func (e *Edge) Routes() []Route {
	agents := e.Agents
	if set := e.agents.Load(); set != nil {
		agents = set.list
	}
	var seen []string
	var rs []Route
	for _, a := range agents {
		for _, n := range a.Names {
			p, err := normalizeClaim(n)
			if err != nil || slices.Contains(seen, p) {
				continue
			}
			seen = append(seen, p)
			host := p
			if p[0] == '.' {
				host = "*" + p
			}
			rs = append(rs, Route{Protocol: ProtocolTLS, Host: host, Target: e},
				Route{Protocol: ProtocolHTTP, Host: host, Target: e})
		}
	}
	return rs
}

// quicServerConfig: agents open one stream (the claim); the edge opens the
// rest. The idle timeout is the smaller of both ends', the agent's usually.
func (e *Edge) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  e.handshakeTimeout(),
		MaxIdleTimeout:        tunnelIdleTimeout(e.keepAlive()),
		KeepAlivePeriod:       e.keepAlive(),
		MaxIncomingStreams:    1,
		MaxIncomingUniStreams: -1,
	}
}

// tunnelIdleTimeout closes a tunnel after three keepalive intervals without
// an answer, and never sooner than 5 s (a loaded link may drop two probes).
func tunnelIdleTimeout(keepAlive time.Duration) time.Duration {
	return max(3*keepAlive, 5*time.Second)
}

// statelessResetKey derives the QUIC stateless reset key from the edge's
// key: an edge that restarted without closing its connections resets the
// agents' old ones at their next packet, so they reconnect at once instead
// of waiting for the idle timeout.
func (e *Edge) statelessResetKey() *quic.StatelessResetKey {
	h := sha256.New()
	h.Write([]byte("hairpin edge stateless reset\x00"))
	h.Write(e.Key.Seed())
	var k quic.StatelessResetKey
	copy(k[:], h.Sum(nil))
	return &k
}

// ErrEdgeClosed is returned by [Edge.ServeQUIC] and [Edge.ServeTCP] after [Edge.Close].
var ErrEdgeClosed = errors.New("proxy: edge closed")

func (e *Edge) addStopper(f func()) (*func(), bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, false
	}
	p := &f
	e.stoppers[p] = struct{}{}
	e.serveWG.Add(1)
	return p, true
}

// removeStopper ends a Serve loop, once its socket is closed: Close waits
// for that, so a restarted edge can bind the same address at once.
func (e *Edge) removeStopper(p *func()) {
	e.mu.Lock()
	delete(e.stoppers, p)
	e.mu.Unlock()
	e.serveWG.Done()
}

// ServeQUIC accepts agent connections over QUIC on pc until [Edge.Close],
// then returns [ErrEdgeClosed]. It closes pc.
func (e *Edge) ServeQUIC(pc net.PacketConn) error {
	defer pc.Close()
	if err := e.init(); err != nil {
		return err
	}
	tr := &quic.Transport{Conn: pc, StatelessResetKey: e.statelessResetKey()}
	ln, err := tr.Listen(e.tlsConf, e.quicConfig())
	if err != nil {
		tr.Close()
		return fmt.Errorf("proxy: edge: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop, ok := e.addStopper(cancel)
	if !ok {
		cancel()
		ln.Close()
		tr.Close()
		return ErrEdgeClosed
	}
	defer func() { pc.Close(); e.removeStopper(stop) }()
	defer tr.Close()
	defer ln.Close()
	defer cancel()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ErrEdgeClosed
			}
			return fmt.Errorf("proxy: edge: %w", err)
		}
		s, err := newQUICSession(c, nil)
		if err != nil {
			e.stats.handshakeFails.Add(1)
			continue
		}
		if !e.startSession(s) {
			return ErrEdgeClosed
		}
	}
}

// ServeTCP accepts agent connections over TLS on l until [Edge.Close],
// then returns [ErrEdgeClosed]. It closes l.
func (e *Edge) ServeTCP(l net.Listener) error {
	defer l.Close()
	if err := e.init(); err != nil {
		return err
	}
	stopCh := make(chan struct{})
	var once sync.Once
	stop, ok := e.addStopper(func() { once.Do(func() { close(stopCh); l.Close() }) })
	if !ok {
		return ErrEdgeClosed
	}
	defer func() { l.Close(); e.removeStopper(stop) }()
	err := netcore.AcceptLoop(l, stopCh, func(c net.Conn) {
		if m := limitOr(e.MaxHandshakes, 64); m > 0 && e.handshake.Add(1) > int64(m) {
			e.handshake.Add(-1)
			e.stats.handshakeFails.Add(1)
			e.logger().Debug("proxy: edge: too many agent handshakes", "src", c.RemoteAddr())
			c.Close()
			return
		} else if m <= 0 {
			e.handshake.Add(1)
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			e.handshake.Add(-1)
			c.Close()
			return
		}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			s, err := e.handshakeTCP(c)
			e.handshake.Add(-1)
			if err != nil {
				e.stats.handshakeFails.Add(1)
				e.logger().Debug("proxy: edge: agent handshake", "src", c.RemoteAddr(), "err", err)
				return
			}
			e.startSession(s)
		}()
	})
	select {
	case <-stopCh:
		return ErrEdgeClosed
	default:
	}
	return fmt.Errorf("proxy: edge: %w", err)
}

func (e *Edge) handshakeTCP(c net.Conn) (tunnelSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.handshakeTimeout())
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	tc := tls.Server(c, e.tlsConf)
	err := tc.HandshakeContext(ctx)
	if !stop() {
		err = netcore.Join(err, ctx.Err())
	}
	c.SetDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, err
	}
	return newYamuxSession(tc, false, e.keepAlive())
}

// startSession runs an authenticated agent connection: claim, then serve.
func (e *Edge) startSession(s tunnelSession) bool {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		s.close("edge closing")
		return false
	}
	e.pending[s] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		e.runSession(s)
	}()
	return true
}

func (e *Edge) runSession(s tunnelSession) {
	defer func() {
		e.mu.Lock()
		delete(e.pending, s)
		e.mu.Unlock()
	}()
	agent := e.agent(s.peerKey())
	if agent == nil { // removed by SetAgents since the TLS check
		s.close("unknown agent")
		return
	}
	ctrl, es, err := e.claim(s, agent)
	if err != nil {
		e.stats.handshakeFails.Add(1)
		e.logger().Warn("proxy: edge: agent claim failed", "agent", agent.Name, "addr", s.remoteAddr(), "err", err)
		s.close("bad claim")
		return
	}
	defer e.unregister(es)
	e.logger().Info("proxy: edge: agent connected", "agent", agent.Name, "addr", s.remoteAddr(),
		"transport", s.transport().String(), "names", es.names)
	// The agent opens no other stream: one more is a protocol violation.
	// The control stream ends when the agent goes away.
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(io.Discard, ctrl)
		s.close("control stream closed")
	})
	if st, err := s.accept(context.Background()); err == nil {
		st.Close()
		e.logger().Warn("proxy: edge: agent opened a stream; closing its connection", "agent", agent.Name)
	}
	s.close("")
	ctrl.Close()
	wg.Wait()
	e.logger().Info("proxy: edge: agent disconnected", "agent", agent.Name, "addr", s.remoteAddr())
}

// claim reads the agent's claim, grants what its authorisation covers and
// registers the session.
func (e *Edge) claim(s tunnelSession, agent *EdgeAgent) (net.Conn, *edgeSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.handshakeTimeout())
	defer cancel()
	ctrl, err := s.accept(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("no claim: %w", err)
	}
	ctrl.SetDeadline(time.Now().Add(e.handshakeTimeout()))
	body, err := readMsg(ctrl, magicClaim)
	if err == nil {
		var names []string
		names, err = parseClaim(body)
		if err == nil {
			es := &edgeSession{agent: agent, sess: s, since: time.Now()}
			status := e.grant(es, names)
			var reply []byte
			if reply, err = encodeClaimReply(status); err == nil {
				// Registered before the reply: once the agent hears it is
				// granted, the edge routes its names to it.
				if !e.register(es) {
					ctrl.Close()
					return nil, nil, ErrEdgeClosed
				}
				if _, err = ctrl.Write(reply); err == nil {
					ctrl.SetDeadline(time.Time{})
					return ctrl, es, nil
				}
				e.unregister(es)
			}
		}
	}
	ctrl.Close()
	return nil, nil, err
}

// grant decides each claimed name and records the granted ones in es.
func (e *Edge) grant(es *edgeSession, names []string) []byte {
	status := make([]byte, len(names))
	for i, n := range names {
		p, err := normalizeClaim(n)
		if err != nil {
			status[i] = claimBadName
		} else if !slices.ContainsFunc(es.agent.Names, func(a string) bool {
			ap, err := normalizeClaim(a)
			return err == nil && claimCovers(ap, p)
		}) {
			status[i] = claimForbidden
		} else {
			status[i] = claimOK
			if !slices.Contains(es.names, p) {
				es.names = append(es.names, p)
			}
			continue
		}
		e.stats.claimsRefused.Add(1)
		e.logger().Warn("proxy: edge: claim refused", "agent", es.agent.Name, "name", n,
			"reason", map[byte]string{claimBadName: "bad name", claimForbidden: "not authorised"}[status[i]])
	}
	return status
}

// register makes es a holder of its names, replacing an older connection of
// the same agent (one connection per agent: the old one is a dead mapping
// after an address change, or a leftover).
func (e *Edge) register(es *edgeSession) bool {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return false
	}
	old := e.byAgent[string(es.agent.PublicKey)]
	if old != nil {
		e.removeLocked(old)
	}
	e.byAgent[string(es.agent.PublicKey)] = es
	e.sessions[es] = struct{}{}
	for _, p := range es.names {
		e.claims[p] = append(e.claims[p], es)
	}
	e.mu.Unlock()
	e.stats.sessions.Add(1)
	if old != nil {
		old.sess.close("replaced by a new connection")
	}
	return true
}

func (e *Edge) removeLocked(es *edgeSession) {
	if _, ok := e.sessions[es]; !ok {
		return
	}
	delete(e.sessions, es)
	if k := string(es.agent.PublicKey); e.byAgent[k] == es {
		delete(e.byAgent, k)
	}
	for _, p := range es.names {
		l := slices.DeleteFunc(e.claims[p], func(x *edgeSession) bool { return x == es })
		if len(l) == 0 {
			delete(e.claims, p)
		} else {
			e.claims[p] = l
		}
	}
}

func (e *Edge) unregister(es *edgeSession) {
	e.mu.Lock()
	e.removeLocked(es)
	e.mu.Unlock()
}

// holders returns the sessions that can take a connection for name: those
// of the most specific pattern first, each group by fewest open streams,
// holders whose last open failed recently after the others.
func (e *Edge) holders(name string) []*edgeSession {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	var out []*edgeSession
	for _, p := range claimPatterns(name) {
		l := slices.Clone(e.claims[p])
		slices.SortStableFunc(l, func(a, b *edgeSession) int {
			if sa, sb := a.suspect(now), b.suspect(now); sa != sb {
				if sa {
					return 1
				}
				return -1
			}
			return int(a.streams.Load() - b.streams.Load())
		})
		for _, s := range l {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// Connected returns the agents connected now.
func (e *Edge) Connected() []EdgeAgentStatus {
	e.init()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []EdgeAgentStatus
	for es := range e.sessions {
		st := EdgeAgentStatus{Name: es.agent.Name, Transport: es.sess.transport(), Streams: es.streams.Load(), Since: es.since}
		if a := es.sess.remoteAddr(); a != nil {
			st.Addr = a.String()
		}
		for _, p := range es.names {
			if p[0] == '.' {
				p = "*" + p
			}
			st.Names = append(st.Names, p)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b EdgeAgentStatus) int {
		if a.Name < b.Name {
			return -1
		} else if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Stats returns a snapshot of the counters.
func (e *Edge) Stats() EdgeStats {
	e.init()
	e.mu.Lock()
	n := len(e.sessions)
	e.mu.Unlock()
	return EdgeStats{
		Agents:            n,
		Sessions:          e.stats.sessions.Load(),
		HandshakeFailures: e.stats.handshakeFails.Load(),
		ClaimsRefused:     e.stats.claimsRefused.Load(),
		Streams:           e.stats.streams.Load(),
		StreamsTotal:      e.stats.streamsTotal.Load(),
		NoAgent:           e.stats.noAgent.Load(),
		Failovers:         e.stats.failovers.Load(),
	}
}

// Close stops the listeners, closes every agent connection (and so the
// client connections carried on them) and waits for the edge's goroutines;
// the sockets given to Serve are closed when it returns.
func (e *Edge) Close() error {
	e.init()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.serveWG.Wait()
		e.wg.Wait()
		return nil
	}
	e.closed = true
	var stops []func()
	for f := range e.stoppers {
		stops = append(stops, *f)
	}
	var sess []tunnelSession
	for es := range e.sessions {
		sess = append(sess, es.sess)
	}
	for s := range e.pending {
		sess = append(sess, s)
	}
	e.mu.Unlock()
	for _, f := range stops {
		f()
	}
	for _, s := range sess {
		s.close("edge closing")
	}
	e.serveWG.Wait()
	e.wg.Wait()
	return nil
}

// HandleConn carries c to an agent holding its name. It implements [Target].
func (e *Edge) HandleConn(ctx context.Context, c *Conn) {
	defer c.Close()
	if err := e.init(); err != nil {
		e.fail(c, err)
		return
	}
	st, es, err := e.open(ctx, c)
	if err != nil {
		e.fail(c, err)
		return
	}
	defer es.streams.Add(-1)
	defer st.Close()
	e.stats.streamsTotal.Add(1)
	e.stats.streams.Add(1)
	defer e.stats.streams.Add(-1)
	pipe(ctx, c, st)
}

var errNoAgent = errors.New("proxy: edge: no agent holds the name")

// errStreamRefused: the agent answered, no (busy, or not its name); the
// tunnel works.
var errStreamRefused = errors.New("refused")

// fail closes c fast: a 503 for HTTP (the service exists but is not
// reachable now), a close for TLS; the proxy counts it as backend down.
func (e *Edge) fail(c *Conn, err error) {
	e.stats.noAgent.Add(1)
	if c.Hello.Protocol == ProtocolHTTP {
		replyHTTP(c.Conn, ReasonLimit) // 503 Service Unavailable
	}
	if c.proxy != nil {
		c.proxy.rejected(c.Conn, &c.Hello, ReasonBackendDown, err)
	} else {
		e.logger().Debug("proxy: edge: connection failed", "src", c.Hello.Source, "name", c.Hello.ServerName, "err", err)
	}
}

// open tries the holders of c's name in turn until one accepts a stream.
func (e *Edge) open(ctx context.Context, c *Conn) (net.Conn, *edgeSession, error) {
	hs := e.holders(c.Hello.ServerName)
	if len(hs) == 0 {
		return nil, nil, errNoAgent
	}
	hdr, err := encodeStreamHeader(&streamHeader{
		Protocol: c.Hello.Protocol, ServerName: c.Hello.ServerName, ALPN: c.Hello.ALPN,
		Source: c.Hello.Source, Dest: c.Hello.Dest,
	})
	if err != nil {
		return nil, nil, err
	}
	if c.Hello.Protocol != ProtocolHTTP {
		hdr = append(hdr, c.Peeked...) // HTTP's peeked head is written by pipe
	}
	var errs []error
	tried := 0
	for _, es := range hs {
		if m := es.agent.maxStreams(); m > 0 && es.streams.Add(1) > int64(m) {
			es.streams.Add(-1)
			errs = append(errs, fmt.Errorf("agent %q: at its stream limit", es.agent.Name))
			continue
		} else if m <= 0 {
			es.streams.Add(1)
		}
		if tried > 0 {
			e.stats.failovers.Add(1)
		}
		tried++
		st, err := e.openOn(ctx, es, hdr)
		if err == nil {
			es.failedAt.Store(0)
			return st, es, nil
		}
		es.streams.Add(-1)
		if !errors.Is(err, errStreamRefused) && ctx.Err() == nil {
			es.failedAt.Store(time.Now().UnixNano())
		}
		errs = append(errs, fmt.Errorf("agent %q: %w", es.agent.Name, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, netcore.Join(append([]error{errNoAgent}, errs...)...)
}

// openOn opens a stream on es, sends hdr and waits for the agent's answer.
func (e *Edge) openOn(ctx context.Context, es *edgeSession, hdr []byte) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.openTimeout())
	defer cancel()
	st, err := es.sess.open(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	var ans [1]byte
	_, err = st.Write(hdr)
	if err == nil {
		_, err = io.ReadFull(st, ans[:])
	}
	if !stop() {
		err = netcore.Join(err, ctx.Err())
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	st.SetDeadline(time.Time{})
	if ans[0] != streamOK {
		st.Close()
		return nil, fmt.Errorf("%w (%d)", errStreamRefused, ans[0])
	}
	return st, nil
}
