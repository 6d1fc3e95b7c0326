package dnssplit

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Upstream is a resolver names are forwarded to.
type Upstream struct {
	// Addr is the upstream's address and port.
	Addr netip.AddrPort

	// TLS selects DNS over TLS (RFC 7858) instead of UDP with TCP fallback.
	TLS bool

	// ServerName optionally names the TLS certificate to expect; if empty
	// with TLS, the certificate must be valid for the address.
	ServerName string

	// TLSConfig optionally replaces the TLS configuration (roots, client
	// certificates); ServerName still fills its ServerName if that is empty.
	TLSConfig *tls.Config
}

func (u Upstream) String() string {
	if u.TLS {
		return "tls://" + u.Addr.String()
	}
	return u.Addr.String()
}

// Policy chooses the order upstreams are tried in.
type Policy int

// Policies.
const (
	PolicyUnknown  Policy = iota
	PolicyFailover        // in the order given, healthy ones first
	PolicyFastest         // healthy ones by smoothed round-trip time
)

func (p Policy) String() string {
	switch p {
	case PolicyFailover:
		return "failover"
	case PolicyFastest:
		return "fastest"
	}
	return "unknown"
}

// ParsePolicy parses the String form of a Policy.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "failover", "":
		return PolicyFailover, nil
	case "fastest":
		return PolicyFastest, nil
	}
	return PolicyUnknown, fmt.Errorf("dnssplit: unknown policy %q (want failover or fastest)", s)
}

const (
	defaultUpstreamTimeout = 2 * time.Second
	defaultHealthInterval  = 5 * time.Second
	// downAfter consecutive failures mark an upstream down: one lost UDP
	// packet should not, a dead server should.
	downAfter = 2
	// upstreamUDPSize is the EDNS size we advertise upstream (see defaultUDPSize).
	upstreamUDPSize = 1232
)

type upstreamState struct {
	Upstream
	mu    sync.Mutex
	fails int
	rtt   time.Duration // smoothed
	down  bool
	stats UpstreamStats
	dot   *dotPool // TLS upstreams: the persistent connection
}

// tlsConfig is the client configuration for a TLS upstream.
func (u *upstreamState) tlsConfig() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if u.TLSConfig != nil {
		cfg = u.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.ServerName
		if cfg.ServerName == "" {
			cfg.ServerName = u.Addr.Addr().String()
		}
	}
	return cfg
}

// DialFunc dials a network address, like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

type forwarder struct {
	dial     DialFunc
	ups      []*upstreamState
	policy   Policy
	timeout  time.Duration
	interval time.Duration
	maxTTL   time.Duration // TTL cap of answers (the cache's MaxTTL)
	scrubbed atomic.Uint64 // records dropped by scrub
}

func newForwarder(ups []Upstream, p Policy, timeout, interval time.Duration, dial DialFunc) *forwarder {
	f := &forwarder{policy: p, timeout: timeout, interval: interval, dial: dial, maxTTL: defaultMaxTTL}
	if f.dial == nil {
		f.dial = new(net.Dialer).DialContext
	}
	if f.timeout <= 0 {
		f.timeout = defaultUpstreamTimeout
	}
	if f.interval <= 0 {
		f.interval = defaultHealthInterval
	}
	for _, u := range ups {
		us := &upstreamState{Upstream: u}
		if u.TLS {
			us.dot = newDoTPool(us, f.dial)
		}
		f.ups = append(f.ups, us)
	}
	return f
}

// close closes the persistent connections and waits for their readers.
func (f *forwarder) close() {
	for _, u := range f.ups {
		if u.dot != nil {
			u.dot.close()
		}
	}
}

// order returns the upstreams in the order to try: healthy ones by policy,
// then the ones marked down (still worth a try when nothing else answers).
func (f *forwarder) order() []*upstreamState {
	var up, down []*upstreamState
	for _, u := range f.ups {
		u.mu.Lock()
		d := u.down
		u.mu.Unlock()
		if d {
			down = append(down, u)
		} else {
			up = append(up, u)
		}
	}
	if f.policy == PolicyFastest {
		rtt := func(u *upstreamState) time.Duration {
			u.mu.Lock()
			defer u.mu.Unlock()
			return u.rtt
		}
		slices.SortStableFunc(up, func(a, b *upstreamState) int { return int(rtt(a) - rtt(b)) })
	}
	return append(up, down...)
}

func (u *upstreamState) result(rtt time.Duration, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if errors.Is(err, errUpstreamRcode) {
		// It answered: alive, but of no use for this name. Whether that
		// counts against its health is for exchange to say (charge).
		u.stats.Failures++
		return
	}
	if err != nil {
		u.stats.Failures++
		u.failLocked()
		return
	}
	u.stats.Answers++
	u.fails, u.down = 0, false
	if u.rtt == 0 {
		u.rtt = rtt
	} else {
		u.rtt = (7*u.rtt + rtt) / 8
	}
}

func (u *upstreamState) failLocked() {
	u.fails++
	if u.fails >= downAfter {
		u.down = true
	}
}

// charge counts an unusable rcode against u's health, once another upstream
// has answered the same question.
func (u *upstreamState) charge() {
	u.mu.Lock()
	u.failLocked()
	u.mu.Unlock()
}

// exchange asks the upstreams for q in order and returns the first valid
// answer. SERVFAIL, REFUSED and answers that fail validation move on to the
// next upstream. An upstream's SERVFAIL or REFUSED counts against its health
// only if a later upstream answers the question: a name that fails
// everywhere (broken DNSSEC, a dead zone), which any client that may
// recurse can ask for, must not mark every upstream down.
func (f *forwarder) exchange(ctx context.Context, q dns.Question, do, cd bool) (*dns.Msg, error) {
	if len(f.ups) == 0 {
		return nil, errors.New("dnssplit: no upstreams")
	}
	var errs []error
	var unusable []*upstreamState
	for _, u := range f.order() {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		start := time.Now()
		r, err := f.try(ctx, u, q, do, cd)
		u.result(time.Since(start), err)
		if err == nil {
			for _, bad := range unusable {
				bad.charge()
			}
			return r, nil
		}
		if errors.Is(err, errUpstreamRcode) {
			unusable = append(unusable, u)
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return nil, fmt.Errorf("dnssplit: all upstreams failed: %w", netcore.Join(errs...))
}

func (f *forwarder) try(ctx context.Context, u *upstreamState, q dns.Question, do, cd bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Qtype)
	m.Question[0].Qclass = q.Qclass
	m.CheckingDisabled = cd
	m.SetEdns0(upstreamUDPSize, do)
	r, err := f.exchangeOn(ctx, u, m, "udp")
	if err == nil && r.Truncated && !u.TLS {
		r, err = f.exchangeOn(ctx, u, m, "tcp")
	}
	if err != nil {
		return nil, err
	}
	if err := validate(m, r); err != nil {
		return nil, err
	}
	r, dropped, err := scrub(q, r, do, f.maxTTL)
	if err != nil {
		return nil, err
	}
	f.scrubbed.Add(uint64(dropped))
	return r, nil
}

// exchangeOn sends m to u over network ("udp" or "tcp") on a connection from
// f.dial; TLS upstreams always use their persistent connection.
func (f *forwarder) exchangeOn(ctx context.Context, u *upstreamState, m *dns.Msg, network string) (*dns.Msg, error) {
	if u.dot != nil {
		return u.dot.exchange(ctx, m)
	}
	conn, err := f.dial(ctx, network, u.Addr.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if network == "udp" {
		return udpExchange(ctx, conn, m, f.timeout)
	}
	c := &dns.Client{Net: network, UDPSize: upstreamUDPSize, Timeout: f.timeout}
	r, _, err := c.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: conn, UDPSize: upstreamUDPSize})
	return r, err
}

// udpExchange sends m on the connected UDP conn and waits for the reply with
// m's ID until timeout (or ctx) ends. If nothing came back after half the
// timeout, the query is sent once more: one lost datagram then costs half a
// timeout instead of a failed attempt. Replies with other IDs (late answers
// to earlier queries, or spoofing attempts) are skipped.
func udpExchange(ctx context.Context, conn net.Conn, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	out, err := m.Pack()
	if err != nil {
		return nil, err
	}
	end := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(end) {
		end = d
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	resend := time.Now().Add(time.Until(end) / 2)
	if _, err := conn.Write(out); err != nil {
		return nil, err
	}
	buf := make([]byte, dns.MaxMsgSize)
	for {
		wait := end
		if !resend.IsZero() {
			wait = resend
		}
		conn.SetReadDeadline(wait)
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !resend.IsZero() && ctx.Err() == nil {
				resend = time.Time{}
				if _, err := conn.Write(out); err != nil {
					return nil, err
				}
				continue
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if n >= 2 && binary.BigEndian.Uint16(buf) != m.Id {
			continue
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadAnswer, err) // garbage: fail over at once
		}
		return r, nil
	}
}

// healthLoop probes upstreams marked down, so they come back when they recover.
func (f *forwarder) healthLoop(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, u := range f.ups {
			u.mu.Lock()
			down := u.down
			u.mu.Unlock()
			if !down {
				continue
			}
			start := time.Now()
			_, err := f.try(ctx, u, dns.Question{Name: ".", Qtype: dns.TypeNS, Qclass: dns.ClassINET}, false, false)
			if errors.Is(err, errBadAnswer) || errors.Is(err, errUpstreamRcode) {
				err = nil // it answers: alive, even if it cannot resolve the root
			}
			u.result(time.Since(start), err)
			if err == nil {
				log.Info("dnssplit: upstream is back", "upstream", u.String())
			}
		}
	}
}

// UpstreamStats counts one upstream's results.
type UpstreamStats struct {
	Addr     string
	Answers  uint64
	Failures uint64
	Down     bool
	RTT      time.Duration
}

func (f *forwarder) stats() []UpstreamStats {
	out := make([]UpstreamStats, 0, len(f.ups))
	for _, u := range f.ups {
		u.mu.Lock()
		st := u.stats
		st.Addr, st.Down, st.RTT = u.String(), u.down, u.rtt
		u.mu.Unlock()
		out = append(out, st)
	}
	return out
}
