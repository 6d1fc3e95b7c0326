package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/proxy"
)

// Proxy serves a proxy: section. Like DNS, it owns the listeners and each
// proxy.Proxy it runs serves duplicates of them, so that a reload can
// change settings the library fixes when it starts serving (limits,
// timeouts, trustProxyFrom, localAddrs) without closing a listener: a new
// proxy starts accepting on fresh duplicates, then the old one stops
// accepting and keeps the connections it routed until they end (or until
// Shutdown). Those connections keep the old settings and do not count
// against the new proxy's limits. A reload that changes only the routes
// swaps them in the running proxy.
type Proxy struct {
	log  *slog.Logger
	fail func(part string, err error)

	ls []boundListener // our own listeners, never served directly

	mu      sync.Mutex
	cfg     *config.Proxy
	cur     *proxy.Proxy
	public  []netip.Addr
	pinned  bool                      // Pin was called: no swaps
	retired map[*proxy.Proxy]struct{} // replaced, still draining
	dups    map[*proxy.Proxy][]boundListener
	gone    proxy.Stats    // counters of the drained ones
	wg      sync.WaitGroup // serving goroutines and drains
}

type boundListener struct {
	l     net.Listener
	proto proxy.Protocol
}

// ProxyLiveKeys returns the key paths of the proxy: section that a reload
// applies while serving: all but the listeners (proxy.tls, proxy.http).
func ProxyLiveKeys() []string {
	return []string{"proxy.routes", "proxy.trustProxyFrom", "proxy.localAddrs", "proxy.peekTimeout",
		"proxy.maxPeekBytes", "proxy.maxConns", "proxy.maxConnsPerSource", "proxy.maxPendingPeeks",
		"proxy.maxPeeksPerSource", "proxy.maxPeeksPerNetwork", "proxy.idleTimeout", "proxy.halfCloseTimeout",
		"proxy.userTimeout", "proxy.httpIdleTimeout"}
}

// NewProxy builds the proxy cfg describes, routes installed. fail is called
// (from a serving goroutine) when a listener stops serving.
func NewProxy(cfg *config.Proxy, log *slog.Logger, fail func(part string, err error)) (*Proxy, error) {
	p, err := cfg.Build(log)
	if err != nil {
		return nil, err
	}
	return &Proxy{log: log, fail: fail, cfg: cfg, cur: p,
		retired: map[*proxy.Proxy]struct{}{}, dups: map[*proxy.Proxy][]boundListener{}}, nil
}

// Listen binds every proxy.tls and proxy.http address with listen
// (net.Listen refuses a port another process holds; proxy.Listen shares it
// with SO_REUSEPORT, for a takeover) and starts serving them. On error the
// listeners bound so far are closed.
func (p *Proxy) Listen(listen func(network, addr string) (net.Listener, error)) error {
	for _, group := range []struct {
		addrs []string
		proto proxy.Protocol
	}{{p.cfg.TLS, proxy.ProtocolTLS}, {p.cfg.HTTP, proxy.ProtocolHTTP}} {
		for _, a := range group.addrs {
			l, err := listen("tcp", a)
			if err != nil {
				p.closeListeners()
				return fmt.Errorf("proxy: %w", err)
			}
			p.ls = append(p.ls, boundListener{l, group.proto})
		}
	}
	if err := p.serve(p.cur); err != nil {
		p.closeListeners()
		return err
	}
	return nil
}

// Addrs returns the bound addresses, proxy.tls first, then proxy.http.
func (p *Proxy) Addrs() []net.Addr {
	out := make([]net.Addr, len(p.ls))
	for i, b := range p.ls {
		out[i] = b.l.Addr()
	}
	return out
}

// Protocols returns the protocol of each address of Addrs.
func (p *Proxy) Protocols() []proxy.Protocol {
	out := make([]proxy.Protocol, len(p.ls))
	for i, b := range p.ls {
		out[i] = b.proto
	}
	return out
}

// serve starts px on duplicates of every listener and remembers them, so
// that a reload can stop px accepting before it returns.
func (p *Proxy) serve(px *proxy.Proxy) error {
	var dups []boundListener
	for _, b := range p.ls {
		l, err := dupListener(b.l)
		if err != nil {
			for _, d := range dups {
				d.l.Close()
			}
			return fmt.Errorf("proxy: %w", err)
		}
		dups = append(dups, boundListener{l, b.proto})
	}
	p.mu.Lock()
	p.dups[px] = dups
	p.mu.Unlock()
	for _, d := range dups {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			err := px.ServeProtocol(d.l, d.proto)
			p.mu.Lock()
			_, retired := p.retired[px]
			p.mu.Unlock()
			// A retired proxy's listeners were closed under it on purpose.
			if err != nil && !errors.Is(err, proxy.ErrServerClosed) && !retired {
				p.fail("proxy", err)
			}
		}()
	}
	return nil
}

// Pin returns the running proxy and keeps it for the life of the process,
// for a caller that serves another listener on it (the gateway's tunnel,
// whose listener cannot be duplicated): from then on a reload applies only
// the routes. LiveKeys says so.
func (p *Proxy) Pin() *proxy.Proxy {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pinned = true
	return p.cur
}

// LiveKeys returns the key paths a reload applies now: ProxyLiveKeys, or
// only proxy.routes once pinned.
func (p *Proxy) LiveKeys() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pinned {
		return []string{"proxy.routes"}
	}
	return ProxyLiveKeys()
}

// Routes returns the running proxy's routes.
func (p *Proxy) Routes() []proxy.Route {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur.Routes()
}

// SetPublicAddrs tells the running proxy (and the ones reloads start) the
// public addresses its loop guard treats as its own.
func (p *Proxy) SetPublicAddrs(addrs ...netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.public = append([]netip.Addr(nil), addrs...)
	p.cur.SetPublicAddrs(addrs...)
}

// Stats adds the counters of every proxy this part ran, so that Prometheus
// counters never go backwards across a reload; Open and Peeking are those
// of the proxies still serving connections.
func (p *Proxy) Stats() proxy.Stats {
	p.mu.Lock()
	out := addProxyStats(p.gone, p.cur.Stats())
	for r := range p.retired {
		out = addProxyStats(out, r.Stats())
	}
	p.mu.Unlock()
	return out
}

// Prepare validates the proxy: section of a new configuration without
// touching the running proxy and returns the function that puts it in
// force: the routes alone swap in place; any other setting starts a new
// proxy on the same listeners (unless pinned: then only the routes apply,
// and LiveKeys has named the rest).
func (p *Proxy) Prepare(next *config.Proxy) (func() error, error) {
	np, err := next.Build(p.log)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	same := p.pinned || sameProxySettings(p.cfg, next)
	p.mu.Unlock()
	if same {
		return func() error {
			_ = np.Close() // only its routes were wanted
			p.mu.Lock()
			defer p.mu.Unlock()
			if err := next.Apply(p.cur, p.log); err != nil {
				return err
			}
			kept := *next
			kept.TLS, kept.HTTP = p.cfg.TLS, p.cfg.HTTP
			if p.pinned {
				// Settings waiting for the restart stay as they run.
				kept = *p.cfg
				kept.Routes = next.Routes
			}
			p.cfg = &kept
			return nil
		}, nil
	}
	return func() error {
		p.mu.Lock()
		np.SetPublicAddrs(p.public...)
		p.mu.Unlock()
		if err := p.serve(np); err != nil {
			_ = np.Close()
			return err
		}
		p.mu.Lock()
		old := p.cur
		kept := *next
		kept.TLS, kept.HTTP = p.cfg.TLS, p.cfg.HTTP
		p.cfg, p.cur = &kept, np
		p.retired[old] = struct{}{}
		oldDups := p.dups[old]
		delete(p.dups, old)
		p.mu.Unlock()
		// The old proxy stops accepting before the reload returns: from
		// then on every new connection gets the new settings.
		for _, d := range oldDups {
			d.l.Close()
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// Stops accepting at once; its connections end by themselves,
			// or at the deadline of Shutdown, which closes them.
			_ = old.Shutdown(context.Background())
			p.mu.Lock()
			delete(p.retired, old)
			p.gone = addProxyStats(p.gone, old.Stats())
			p.mu.Unlock()
		}()
		return nil
	}, nil
}

// Shutdown stops accepting, lets the connections of the running proxy and
// of the ones reloads replaced finish until ctx is done, then closes them,
// and waits for the serving goroutines.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	all := []*proxy.Proxy{p.cur}
	for r := range p.retired {
		all = append(all, r)
	}
	p.mu.Unlock()
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, px := range all {
		wg.Go(func() { errs[i] = px.Shutdown(ctx) })
	}
	wg.Wait()
	p.closeListeners()
	p.wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			return err
		}
	}
	return nil
}

func (p *Proxy) closeListeners() {
	for _, b := range p.ls {
		b.l.Close()
	}
}

// sameProxySettings reports whether two proxy: sections differ only in the
// routes (which swap in place) and the listeners (which wait for a
// restart).
func sameProxySettings(a, b *config.Proxy) bool {
	for _, p := range config.Diff("proxy", a, b) {
		if !config.Covered(p, []string{"proxy.routes", "proxy.tls", "proxy.http"}) {
			return false
		}
	}
	return true
}

func addProxyStats(a, b proxy.Stats) proxy.Stats {
	out := b
	out.Accepted += a.Accepted
	out.Routed += a.Routed
	out.Open += a.Open
	out.Peeking += a.Peeking
	out.Shed += a.Shed
	out.Rejected = map[string]uint64{}
	for _, m := range []map[string]uint64{a.Rejected, b.Rejected} {
		for k, n := range m {
			out.Rejected[k] += n
		}
	}
	return out
}
