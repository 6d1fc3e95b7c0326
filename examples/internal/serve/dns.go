// Package serve runs the library servers the example binaries share on
// sockets it owns, so that a reload can replace a server without closing a
// socket. The gateway and splitdns run the dns: section through it.
package serve

import (
	"context"
	"errors"
	"fmt"
	"github.com/hairpin-go/hairpin/internal/netcore"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/hairpin-go/hairpin/examples/internal/config"
)

// DNS serves a dns: section. It owns the sockets; each dnssplit.Server it
// runs serves duplicates of them, so that a reload can replace the server
// (new upstreams, transfer ACL, TSIG keys, rate limit, trusted proxies,
// cache settings) without closing a socket: the new server starts on fresh
// duplicates, then the old one shuts down and finishes its TCP connections.
// Both read the same kernel sockets meanwhile, so no query is lost. A reload
// that changes only views and records keeps the server (and its cache) and
// swaps the views.
type DNS struct {
	log  *slog.Logger
	fail func(part string, err error)
	// stop ends the grace of servers a reload replaced (at shutdown).
	stop context.Context

	pcs   []net.PacketConn // our own sockets, never served directly
	ls    []net.Listener
	addrs []net.Addr

	mu        sync.Mutex
	cfg       *config.DNS
	srv       *dnssplit.Server
	setPublic func(netip.Addr) error
	retired   dnssplit.Stats  // counters of the servers a reload replaced
	udp       *sync.WaitGroup // the current server's UDP serving goroutines
	wg        sync.WaitGroup  // serving goroutines and retiring servers
}

// DNSLiveKeys returns the key paths of the dns: section that Prepare
// applies while serving: all but dns.listen. Views and records swap in
// place; every other setting swaps the server on the same sockets.
func DNSLiveKeys() []string {
	return []string{"dns.views", "dns.upstreams", "dns.policy", "dns.upstreamTimeout", "dns.trustedProxies",
		"dns.cache", "dns.rateLimit", "dns.transfer", "dns.udpSize", "dns.workers",
		"dns.maxTCPConns", "dns.maxTCPConnsPerNetwork", "dns.tcpIdleTimeout", "dns.cookieSecret", "dns.forwardDoHCanary"}
}

// retireTimeout is how long a DNS server replaced by a reload keeps its TCP
// connections: a client in the middle of a zone transfer finishes it.
const retireTimeout = 10 * time.Second

// NewDNS builds the server cfg describes; public, if valid, is substituted
// for {public} in records. fail is called (from a serving goroutine) when a
// socket stops serving; stop, when done, ends the grace of servers a reload
// replaced.
func NewDNS(cfg *config.DNS, public netip.Addr, log *slog.Logger, fail func(part string, err error), stop context.Context) (*DNS, error) {
	srv, setPublic, err := cfg.Build(log)
	if err != nil {
		return nil, err
	}
	if public.IsValid() {
		if err := setPublic(public); err != nil {
			srv.Close()
			return nil, err
		}
	}
	return &DNS{log: log, fail: fail, stop: stop, cfg: cfg, srv: srv, setPublic: setPublic}, nil
}

// Listen binds every dns.listen address for UDP and TCP (the same port on
// both, also when the port is 0) and starts serving them. On error the
// sockets bound so far are closed.
func (d *DNS) Listen(addrs []string) error {
	for _, a := range addrs {
		pc, l, err := netcore.ListenBoth(a)
		if err != nil {
			d.closeSockets()
			return fmt.Errorf("dns: %w", err)
		}
		d.pcs, d.ls = append(d.pcs, pc), append(d.ls, l)
		d.addrs = append(d.addrs, pc.LocalAddr())
	}
	if _, err := d.serve(d.srv); err != nil {
		d.closeSockets()
		return err
	}
	return nil
}

// Addrs returns the bound addresses (UDP and TCP share each).
func (d *DNS) Addrs() []net.Addr { return d.addrs }

// serve starts srv on duplicates of every socket and returns the UDP
// serving goroutines of the server it replaces (nil at the first start).
func (d *DNS) serve(srv *dnssplit.Server) (replaced *sync.WaitGroup, err error) {
	var pcs []net.PacketConn
	var ls []net.Listener
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
		for _, l := range ls {
			l.Close()
		}
	}
	for i := range d.pcs {
		pc, err := dupPacketConn(d.pcs[i])
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dns: %w", err)
		}
		pcs = append(pcs, pc)
		l, err := dupListener(d.ls[i])
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dns: %w", err)
		}
		ls = append(ls, l)
	}
	udp := new(sync.WaitGroup)
	run := func(part string, also *sync.WaitGroup, fn func() error) {
		d.wg.Add(1)
		also.Add(1)
		go func() {
			defer d.wg.Done()
			defer also.Done()
			if err := fn(); err != nil && !errors.Is(err, dnssplit.ErrServerClosed) {
				d.fail(part, err)
			}
		}()
	}
	for i := range pcs {
		pc, l := pcs[i], ls[i]
		run("dns/udp", udp, func() error { return srv.ServePacket(pc) })
		run("dns/tcp", new(sync.WaitGroup), func() error { return srv.Serve(l) })
	}
	d.mu.Lock()
	old := d.udp
	d.udp = udp
	d.mu.Unlock()
	return old, nil
}

// Server returns the server answering now.
func (d *DNS) Server() *dnssplit.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.srv
}

// Stats is the current server's counters plus those of the servers reloads
// replaced, so that Prometheus counters never go backwards.
func (d *DNS) Stats() dnssplit.Stats {
	d.mu.Lock()
	srv, retired := d.srv, d.retired
	d.mu.Unlock()
	return addStats(retired, srv.Stats())
}

// SetPublicAddr substitutes a for {public} in the records from now on.
func (d *DNS) SetPublicAddr(a netip.Addr) error {
	d.mu.Lock()
	set := d.setPublic
	d.mu.Unlock()
	return set(a)
}

// Prepare builds the DNS part of a new configuration without touching the
// running server and returns the function that puts it in force. Every
// setting but dns.listen applies: views and records by SetViews, the rest by
// a new server on the same sockets.
func (d *DNS) Prepare(next *config.DNS, public netip.Addr) (func() error, error) {
	srv, setPublic, err := next.Build(d.log)
	if err != nil {
		return nil, err
	}
	if public.IsValid() {
		if err := setPublic(public); err != nil {
			srv.Close()
			return nil, err
		}
	}
	d.mu.Lock()
	same := sameServerSettings(d.cfg, next)
	d.mu.Unlock()
	if same {
		return func() error {
			d.mu.Lock()
			d.srv.SetViews(srv.Views)
			d.cfg, d.setPublic = next, setPublic
			d.mu.Unlock()
			return nil
		}, nil
	}
	return func() error {
		oldUDP, err := d.serve(srv)
		if err != nil {
			return err
		}
		d.mu.Lock()
		old := d.srv
		d.cfg, d.srv, d.setPublic = next, srv, setPublic
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			// The old server's TCP clients get its idle timeout to finish;
			// Shutdown then closes what is left.
			ctx, cancel := context.WithTimeout(d.stop, retireTimeout)
			defer cancel()
			_ = old.Shutdown(ctx)
			st := old.Stats()
			d.mu.Lock()
			d.retired = addStats(d.retired, st)
			d.mu.Unlock()
		}()
		// Both servers read duplicates of one UDP socket: until the old one
		// stops reading, the kernel hands it part of the queries and they get
		// the old settings. The reload is done when only the new one answers.
		// Shutdown, just started, ends its UDP reads with a past deadline.
		oldUDP.Wait()
		return nil
	}, nil
}

// Shutdown stops the server, closes the sockets and waits, until ctx is
// done, for the serving goroutines and the servers reloads retired.
func (d *DNS) Shutdown(ctx context.Context) error {
	err := d.Server().Shutdown(ctx)
	if errors.Is(err, dnssplit.ErrServerClosed) {
		err = nil
	}
	d.closeSockets()
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

func (d *DNS) closeSockets() {
	for _, pc := range d.pcs {
		pc.Close()
	}
	for _, l := range d.ls {
		l.Close()
	}
}

// sameServerSettings reports whether two dns: sections differ only in what
// SetViews replaces (views and records) and in the listeners (which wait
// for a restart).
func sameServerSettings(a, b *config.DNS) bool {
	if a == nil || b == nil {
		return a == b
	}
	for _, p := range config.Diff("dns", a, b) {
		if !config.Covered(p, []string{"dns.views", "dns.listen"}) {
			return false
		}
	}
	return true
}

func addStats(a, b dnssplit.Stats) dnssplit.Stats {
	out := b
	out.Queries = map[string]map[string]uint64{}
	for _, q := range []map[string]map[string]uint64{a.Queries, b.Queries} {
		for view, byRcode := range q {
			m := out.Queries[view]
			if m == nil {
				m = map[string]uint64{}
				out.Queries[view] = m
			}
			for rcode, n := range byRcode {
				m[rcode] += n
			}
		}
	}
	out.CacheHits += a.CacheHits
	out.CacheMisses += a.CacheMisses
	out.UpstreamFailures += a.UpstreamFailures
	out.UpstreamScrubbed += a.UpstreamScrubbed
	out.UpstreamLocal += a.UpstreamLocal
	out.StaleServed += a.StaleServed
	out.HeldNXDOMAIN += a.HeldNXDOMAIN
	out.RateLimited += a.RateLimited
	out.Malformed += a.Malformed
	out.TCPRejected += a.TCPRejected
	out.TCPEvicted += a.TCPEvicted
	out.TransfersServed += a.TransfersServed
	out.TransfersRefused += a.TransfersRefused
	out.NotifiesSent += a.NotifiesSent
	return out
}

// dupPacketConn returns a second socket descriptor for pc's socket.
func dupPacketConn(pc net.PacketConn) (net.PacketConn, error) {
	fc, ok := pc.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("cannot duplicate a %T", pc)
	}
	f, err := fc.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FilePacketConn(f)
}

// dupListener returns a second descriptor for l's listening socket.
func dupListener(l net.Listener) (net.Listener, error) {
	fl, ok := l.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("cannot duplicate a %T", l)
	}
	f, err := fl.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}
