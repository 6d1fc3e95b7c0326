package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/hairpin-go/hairpin/examples/internal/config"
)

// dnsPart serves the dns: section. The gateway owns the sockets; each
// dnssplit.Server it runs serves duplicates of them, so that a reload can
// replace the server (new upstreams, transfer ACL, TSIG keys, rate limit,
// trusted proxies, cache settings) without closing a socket: the new server
// starts on fresh duplicates, then the old one shuts down and finishes its
// TCP connections. Both read the same kernel sockets meanwhile, so no query
// is lost. A reload that changes only views and records keeps the server
// (and its cache) and swaps the views.
type dnsPart struct {
	log  *slog.Logger
	fail func(part string, err error)
	// stop ends the grace of servers a reload replaced (gateway shutdown).
	stop context.Context

	pcs   []net.PacketConn // the gateway's own sockets, never served directly
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

// retireTimeout is how long a DNS server replaced by a reload keeps its TCP
// connections: a client in the middle of a zone transfer finishes it.
const retireTimeout = 10 * time.Second

// listen binds every dns.listen address for UDP and TCP (the same port on
// both, also when the port is 0).
func (d *dnsPart) listen(addrs []string) error {
	for _, a := range addrs {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return fmt.Errorf("gateway: dns: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			return fmt.Errorf("gateway: dns: %w", err)
		}
		d.pcs, d.ls = append(d.pcs, pc), append(d.ls, l)
		d.addrs = append(d.addrs, pc.LocalAddr())
	}
	return nil
}

// serve starts srv on duplicates of every socket and returns the UDP
// serving goroutines of the server it replaces (nil at the first start).
func (d *dnsPart) serve(srv *dnssplit.Server) (replaced *sync.WaitGroup, err error) {
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
			return nil, fmt.Errorf("gateway: dns: %w", err)
		}
		pcs = append(pcs, pc)
		l, err := dupListener(d.ls[i])
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("gateway: dns: %w", err)
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

func (d *dnsPart) server() *dnssplit.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.srv
}

// stats is the current server's counters plus those of the servers reloads
// replaced, so that Prometheus counters never go backwards.
func (d *dnsPart) stats() dnssplit.Stats {
	d.mu.Lock()
	srv, retired := d.srv, d.retired
	d.mu.Unlock()
	return addStats(retired, srv.Stats())
}

func (d *dnsPart) setPublicAddr(a netip.Addr) error {
	d.mu.Lock()
	set := d.setPublic
	d.mu.Unlock()
	return set(a)
}

// prepare builds the DNS part of a new configuration without touching the
// running server and returns the function that puts it in force.
func (d *dnsPart) prepare(next *config.DNS, public netip.Addr) (func() error, error) {
	srv, setPublic, err := next.Build(d.log)
	if err != nil {
		return nil, err
	}
	if public.IsValid() {
		if err := setPublic(public); err != nil {
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

// shutdown stops the server and closes the sockets.
func (d *dnsPart) shutdown(ctx context.Context) error {
	srv := d.server()
	var err error
	if srv != nil {
		err = srv.Shutdown(ctx)
	}
	for _, pc := range d.pcs {
		pc.Close()
	}
	for _, l := range d.ls {
		l.Close()
	}
	return err
}

// sameServerSettings reports whether two dns: sections differ only in what
// SetViews replaces (views and records) and in the listeners (which wait
// for a restart).
func sameServerSettings(a, b *config.DNS) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.Views, y.Views = nil, nil
	x.Listen, y.Listen = nil, nil
	return reflect.DeepEqual(x, y)
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
	out.StaleServed += a.StaleServed
	out.HeldNXDOMAIN += a.HeldNXDOMAIN
	out.RateLimited += a.RateLimited
	out.Malformed += a.Malformed
	out.TCPRejected += a.TCPRejected
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
