package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Balance chooses how a [Pool] spreads connections over healthy backends.
type Balance int

// Balancing policies.
const (
	BalanceUnknown    Balance = iota // treated as BalanceLeastConn
	BalanceLeastConn                 // fewest open connections, ties in list order rotated
	BalanceRoundRobin                // each backend in turn
	BalanceFirst                     // the first healthy backend in list order (active/standby)
)

// String returns "leastconn", "roundrobin", "first" or "unknown".
func (b Balance) String() string {
	switch b {
	case BalanceLeastConn:
		return "leastconn"
	case BalanceRoundRobin:
		return "roundrobin"
	case BalanceFirst:
		return "first"
	}
	return "unknown"
}

// ParseBalance parses the names String returns ("" means leastconn).
func ParseBalance(s string) (Balance, error) {
	switch s {
	case "", "leastconn":
		return BalanceLeastConn, nil
	case "roundrobin":
		return BalanceRoundRobin, nil
	case "first":
		return BalanceFirst, nil
	}
	return BalanceUnknown, fmt.Errorf("proxy: bad balance %q: want leastconn, roundrobin or first", s)
}

// HealthCheck configures the active checks of a [Pool]'s backends. They run
// while a [Proxy] serving a route to the pool runs.
type HealthCheck struct {
	// Interval optionally sets the time between checks; if zero, 5 s.
	// Negative disables active checks: a backend that fails to connect is
	// then skipped for 10 s.
	Interval time.Duration
	// Timeout optionally bounds one check; if zero, 2 s.
	Timeout time.Duration
	// TLS makes the check a TLS handshake with ServerName as SNI, which must
	// also be a name the backend's certificate covers. Otherwise a check is a
	// TCP connect.
	TLS bool
	// ServerName is the SNI of TLS checks.
	ServerName string
	// RootCAs optionally also verifies the certificate chain; if nil only
	// the name is checked (home backends often use self-signed certificates).
	RootCAs *x509.CertPool
	// Rise and Fall optionally set how many checks in a row bring a backend
	// up or down; if zero, 2 and 3 (HAProxy's defaults).
	Rise, Fall int
}

// Pool is a [Target] that forwards connections to a set of backends: the
// peeked bytes first (after a PROXY header if configured), then both
// directions spliced until each side closes. Do not change its fields after
// first use. Safe for concurrent use.
type Pool struct {
	// Backends are the "host:port" addresses to dial.
	Backends []string
	// Balance chooses among healthy backends; the zero value is least-connections.
	Balance Balance
	// ProxyProtocol optionally sends a PROXY header to the backend first.
	ProxyProtocol ProxyProtocol
	// HealthCheck configures active health checks.
	HealthCheck HealthCheck
	// DialTimeout optionally bounds one connect attempt; if zero, 3 s.
	DialTimeout time.Duration
	// Retries optionally sets how many more backends to try after a failed
	// connect (the peeked bytes are replayed to each); if zero, 2.
	// Negative: no retry.
	Retries int
	// Logger optionally specifies the logger; if nil, slog.Default().
	Logger *slog.Logger
	// DialContext optionally dials backends and health checks (to use
	// another network namespace, a source address or a mark, say); if nil,
	// a net.Dialer with DialTimeout is used. The proxy's TCP options are
	// applied to the connection it returns if it is a *net.TCPConn.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	once     sync.Once
	backends []*backend
	next     atomic.Uint64

	mu     sync.Mutex
	refs   int
	cancel context.CancelFunc
	done   chan struct{}
}

type backend struct {
	addr      string
	healthy   atomic.Bool
	active    atomic.Int64
	downUntil atomic.Int64 // unix nanos; passive mode only
	ok, bad   int          // consecutive check results, checker goroutine only
}

// BackendStatus reports one backend of a [Pool].
type BackendStatus struct {
	Addr    string
	Healthy bool
	Active  int64 // open connections
}

func (pl *Pool) init() {
	pl.once.Do(func() {
		for _, a := range pl.Backends {
			b := &backend{addr: a}
			b.healthy.Store(true) // optimistic until the first checks say otherwise
			pl.backends = append(pl.backends, b)
		}
	})
}

// Status returns the state of each backend.
func (pl *Pool) Status() []BackendStatus {
	pl.init()
	var s []BackendStatus
	for _, b := range pl.backends {
		s = append(s, BackendStatus{Addr: b.addr, Healthy: pl.up(b), Active: b.active.Load()})
	}
	return s
}

func (pl *Pool) logger() *slog.Logger {
	if pl.Logger != nil {
		return pl.Logger
	}
	return slog.Default()
}

func (pl *Pool) dialTimeout() time.Duration {
	if pl.DialTimeout > 0 {
		return pl.DialTimeout
	}
	return 3 * time.Second
}

func (pl *Pool) up(b *backend) bool {
	if pl.HealthCheck.Interval < 0 {
		return time.Now().UnixNano() >= b.downUntil.Load()
	}
	return b.healthy.Load()
}

// order returns the backends to try: healthy ones in balance order, then the
// others as a last resort.
func (pl *Pool) order() []*backend {
	pl.init()
	n := len(pl.backends)
	if n == 0 {
		return nil
	}
	rot := 0
	if pl.Balance != BalanceFirst {
		rot = int(pl.next.Add(1) % uint64(n))
	}
	var good, bad []*backend
	for i := range n {
		b := pl.backends[(i+rot)%n]
		if pl.up(b) {
			good = append(good, b)
		} else {
			bad = append(bad, b)
		}
	}
	if pl.Balance == BalanceLeastConn || pl.Balance == BalanceUnknown {
		slices.SortStableFunc(good, func(a, b *backend) int {
			return int(a.active.Load() - b.active.Load())
		})
	}
	return append(good, bad...)
}

func (pl *Pool) markDown(b *backend) {
	if pl.HealthCheck.Interval < 0 {
		b.downUntil.Store(time.Now().Add(passiveDown).UnixNano())
		return
	}
	if b.healthy.Swap(false) {
		pl.logger().Warn("proxy: backend down (connect failed)", "backend", b.addr)
	}
}

// passiveDown is how long a backend that failed to connect is skipped when
// active checks are off: long enough to stop hammering it, short enough to
// notice it is back.
const passiveDown = 10 * time.Second

// HandleConn dials a backend and copies the connection both ways.
func (pl *Pool) HandleConn(ctx context.Context, c *Conn) {
	defer c.Close()
	bc, b, err := pl.connect(ctx, c)
	if err != nil {
		if c.Hello.Protocol == ProtocolHTTP {
			replyHTTP(c.Conn, ReasonBackendDown)
		}
		if c.proxy != nil {
			c.proxy.rejected(c.Conn, &c.Hello, ReasonBackendDown, err)
		}
		pl.logger().Warn("proxy: no backend reachable", "src", c.Hello.Source, "name", c.Hello.ServerName, "err", err)
		return
	}
	defer bc.Close()
	b.active.Add(1)
	defer b.active.Add(-1)
	if c.proxy != nil {
		defer c.proxy.loops.removeDial(keyOf(bc))
	}
	pipe(ctx, c, bc)
}

// connect tries backends in order, writing the PROXY header and (except for
// HTTP, which forwardHTTP writes) the peeked bytes, until one takes them.
func (pl *Pool) connect(ctx context.Context, c *Conn) (net.Conn, *backend, error) {
	order := pl.order()
	if len(order) == 0 {
		return nil, nil, errors.New("proxy: pool has no backends")
	}
	attempts := 1 + limitOr(pl.Retries, 2)
	if pl.Retries < 0 {
		attempts = 1
	}
	var errs []error
	for i := 0; i < attempts && i < len(order); i++ {
		b := order[i]
		bc, err := pl.dialOne(ctx, c, b.addr)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			if !errors.Is(err, errLoop) {
				pl.markDown(b)
			}
			continue
		}
		return bc, b, nil
	}
	return nil, nil, netcore.Join(errs...)
}

var errLoop = errors.New("proxy: backend is this proxy (loop)")

func (pl *Pool) dialOne(ctx context.Context, c *Conn, addr string) (net.Conn, error) {
	var p *Proxy = c.proxy
	if p != nil {
		if ap, err := netip.ParseAddrPort(addr); err == nil && p.loops.isListener(ap, p.ownAddrs()) {
			return nil, fmt.Errorf("%s: %w", addr, errLoop)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, pl.dialTimeout())
	bc, err := pl.dial(dctx, addr)
	cancel()
	if err != nil {
		return nil, err
	}
	if p != nil {
		setTCPOptions(bc, p.KeepAlive, p.UserTimeout)
		if p.loops.isListener(netcore.AddrPort(bc.RemoteAddr()), p.ownAddrs()) {
			bc.Close()
			return nil, fmt.Errorf("%s: %w", addr, errLoop)
		}
		p.loops.addDial(bc)
	}
	var prefix []byte
	if pl.ProxyProtocol == ProxyProtocolV1 || pl.ProxyProtocol == ProxyProtocolV2 {
		var id []byte
		if p != nil {
			id = p.ids.id()
		}
		h, err := buildProxyHeader(pl.ProxyProtocol, c.Hello.Source, c.Hello.Dest, c.Hello.ServerName, c.Hello.ALPN, id)
		if err != nil {
			bc.Close()
			return nil, err
		}
		prefix = h
	}
	if c.Hello.Protocol != ProtocolHTTP {
		prefix = append(prefix, c.Peeked...)
	}
	if len(prefix) > 0 {
		bc.SetWriteDeadline(time.Now().Add(pl.dialTimeout()))
		_, err := bc.Write(prefix)
		bc.SetWriteDeadline(time.Time{})
		if err != nil {
			if p != nil {
				p.loops.removeDial(keyOf(bc))
			}
			bc.Close()
			return nil, err
		}
	}
	return bc, nil
}

func (pl *Pool) dial(ctx context.Context, addr string) (net.Conn, error) {
	if pl.DialContext != nil {
		return pl.DialContext(ctx, "tcp", addr)
	}
	d := net.Dialer{KeepAlive: -1}
	return d.DialContext(ctx, "tcp", addr)
}

// acquire starts the pool's health checks on first use by a serving proxy.
func (pl *Pool) acquire(*Proxy) {
	pl.init()
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.refs++
	if pl.refs > 1 || pl.HealthCheck.Interval < 0 || len(pl.backends) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	pl.cancel, pl.done = cancel, make(chan struct{})
	go pl.checkLoop(ctx, pl.done)
}

// release stops the checks when the last serving proxy lets go.
func (pl *Pool) release() {
	pl.mu.Lock()
	pl.refs--
	cancel, done := pl.cancel, pl.done
	if pl.refs > 0 || cancel == nil {
		pl.mu.Unlock()
		return
	}
	pl.cancel, pl.done = nil, nil
	pl.mu.Unlock()
	cancel()
	<-done
}

func (pl *Pool) checkLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	hc := pl.HealthCheck
	interval := hc.Interval
	if interval == 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, b := range pl.backends {
			wg.Go(func() { pl.checkOne(ctx, b) })
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (pl *Pool) checkOne(ctx context.Context, b *backend) {
	hc := pl.HealthCheck
	err := pl.probe(ctx, b.addr)
	if ctx.Err() != nil {
		return
	}
	rise, fall := hc.Rise, hc.Fall
	if rise <= 0 {
		rise = 2
	}
	if fall <= 0 {
		fall = 3
	}
	if err == nil {
		b.ok, b.bad = b.ok+1, 0
		if b.ok >= rise && !b.healthy.Swap(true) {
			pl.logger().Info("proxy: backend up", "backend", b.addr)
		}
		return
	}
	b.ok, b.bad = 0, b.bad+1
	if b.bad >= fall && b.healthy.Swap(false) {
		pl.logger().Warn("proxy: backend down", "backend", b.addr, "err", err)
	}
}

// probe runs one check: a TCP connect, or a TLS handshake checking the name.
func (pl *Pool) probe(ctx context.Context, addr string) error {
	hc := pl.HealthCheck
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := pl.dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if !hc.TLS {
		return nil
	}
	cfg := &tls.Config{
		ServerName:         hc.ServerName,
		InsecureSkipVerify: true, // verified below: the name always, the chain if RootCAs is set
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("proxy: backend sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			if hc.ServerName != "" {
				if err := leaf.VerifyHostname(hc.ServerName); err != nil {
					return err
				}
			}
			if hc.RootCAs != nil {
				inter := x509.NewCertPool()
				for _, ic := range cs.PeerCertificates[1:] {
					inter.AddCert(ic)
				}
				_, err := leaf.Verify(x509.VerifyOptions{Roots: hc.RootCAs, Intermediates: inter, DNSName: hc.ServerName})
				return err
			}
			return nil
		},
	}
	tc := tls.Client(c, cfg)
	return tc.HandshakeContext(ctx)
}
