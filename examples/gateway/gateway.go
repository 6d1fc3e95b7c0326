package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/nat"
	"github.com/hairpin-go/hairpin/proxy"
	"github.com/hairpin-go/hairpin/relay"
	"github.com/prometheus/client_golang/prometheus"
)

// relayDrain is how long a shutdown waits for TURN allocations to end; calls
// in progress get this long before their relay goes away.
const relayDrain = 5 * time.Second

// gateway is the running composition of the four packages. Its parts are
// optional: a section missing from the configuration is not run.
type gateway struct {
	log *slog.Logger

	mu     sync.Mutex // guards cfg, public, report
	cfg    *config.File
	public netip.Addr
	report *nat.Report
	// lifetime is the report of the mapping lifetime search, nil until done.
	lifetime *nat.Report

	dns          *dnssplit.Server
	dnsSetPublic func(netip.Addr) error
	dnsAddrs     []net.Addr

	proxy      *proxy.Proxy
	proxyAddrs []net.Addr

	relay          *relay.Server
	relaySetPublic func(netip.Addr)

	prober  *nat.Client
	stun    *nat.Server
	demo    *demo
	metrics *metricsServer

	cancel context.CancelFunc // stops the probe loop and the relay
	wg     sync.WaitGroup     // every goroutine the gateway started
	health error              // first serving error, for /healthz; guarded by mu
}

// start brings every configured part up. On error, whatever had started is
// shut down again.
func start(ctx context.Context, cfg *config.File, log *slog.Logger) (_ *gateway, err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g := &gateway{log: log, cfg: cfg, cancel: cancel}
	defer func() {
		if err != nil {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			_ = g.shutdown(sctx)
		}
	}()

	if cfg.Demo != nil {
		if g.demo, err = startDemo(cfg.Demo, log.With("part", "demo")); err != nil {
			return g, err
		}
	}
	if err := g.startNAT(ctx); err != nil {
		return g, err
	}
	if cfg.DNS != nil {
		if err := g.startDNS(); err != nil {
			return g, err
		}
	}
	if cfg.Proxy != nil {
		if err := g.startProxy(); err != nil {
			return g, err
		}
	}
	if cfg.Relay != nil {
		if err := g.startRelay(runCtx); err != nil {
			return g, err
		}
	}
	if cfg.Metrics != "" {
		reg := prometheus.NewRegistry()
		g.register(reg)
		if g.metrics, err = startMetrics(cfg.Metrics, reg, g.healthy, log); err != nil {
			return g, fmt.Errorf("gateway: metrics: %w", err)
		}
		log.Info("metrics listening", "addr", g.metrics.addr.String())
	}
	if g.prober != nil {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.probeLoop(runCtx, cfg.NAT.ProbeInterval())
		}()
	}
	if cfg.NAT == nil {
		return g, nil
	}
	if lc := cfg.NAT.LifetimeClient(log.With("part", "nat")); lc != nil {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.measureLifetime(runCtx, lc)
		}()
	}
	return g, nil
}

// startNAT learns the public address: fixed in the file, or probed once now
// (the periodic probe runs later in probeLoop).
func (g *gateway) startNAT(ctx context.Context) error {
	if g.cfg.NAT == nil {
		return nil
	}
	if a, ok := g.cfg.NAT.PublicAddr(); ok {
		g.public = a
		g.log.Info("public address fixed by configuration", "public", a.String())
	}
	if srv := g.cfg.NAT.STUNServer(g.log.With("part", "stun")); srv != nil {
		g.stun = srv
		g.serve("stun", func() error { return srv.ListenAndServe("") }, nat.ErrServerClosed)
		g.log.Info("stun server listening", "primary", srv.Primary.String(), "alternate", srv.Alternate.String())
	}
	g.prober = g.cfg.NAT.Client(g.log.With("part", "nat"))
	if g.prober == nil {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	g.probe(pctx)
	return nil
}

// probe runs one NAT probe, reports what it means to the operator and, when
// the public address changed (and is not fixed), announces the new one.
func (g *gateway) probe(ctx context.Context) {
	r, err := g.prober.Probe(ctx)
	if err != nil {
		g.log.Warn("NAT probe failed; keeping the last known public address", "err", err)
		return
	}
	g.mu.Lock()
	first := g.report == nil
	g.report = r
	_, fixed := g.cfg.NAT.PublicAddr()
	old := g.public
	g.mu.Unlock()
	if first {
		for _, a := range advice(r) {
			g.log.Info(a)
		}
	}
	if fixed || !r.Public.IsValid() {
		return
	}
	if pub := r.Public.Addr(); pub != old {
		g.log.Info("public address", "public", pub.String(), "was", old.String())
		g.setPublic(pub)
	}
}

// measureLifetime runs the slow UDP mapping lifetime search once, in the
// background, and tells the operator the keepalive interval it implies.
func (g *gateway) measureLifetime(ctx context.Context, c *nat.Client) {
	g.log.Info("measuring the NAT's UDP mapping lifetime in the background (takes up to twice nat.lifetimeMax)")
	r, err := c.Probe(ctx)
	if err != nil || r.MappingLifetime == 0 {
		if ctx.Err() == nil {
			g.log.Warn("UDP mapping lifetime not measured", "err", err)
		}
		return
	}
	g.mu.Lock()
	g.lifetime = r // reports are shared read-only; keep the measurement beside them
	g.mu.Unlock()
	g.log.Info(lifetimeAdvice(r))
}

// retryUnknown is how soon the probe runs again while the public address is
// still unknown (the first probe failed): records with {public} and the
// relay's announcement wait for it, so "every" (minutes) is too long.
const retryUnknown = 30 * time.Second

func (g *gateway) probeLoop(ctx context.Context, every time.Duration) {
	t := time.NewTimer(g.nextProbe(every))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			g.probe(pctx)
			cancel()
			t.Reset(g.nextProbe(every))
		}
	}
}

func (g *gateway) nextProbe(every time.Duration) time.Duration {
	g.mu.Lock()
	known := g.public.IsValid()
	g.mu.Unlock()
	if known {
		return every
	}
	return min(every, retryUnknown)
}

// setPublic announces a new public address to every part.
func (g *gateway) setPublic(a netip.Addr) {
	g.mu.Lock()
	g.public = a
	dnsSetPublic := g.dnsSetPublic
	g.mu.Unlock()
	if dnsSetPublic != nil {
		if err := dnsSetPublic(a); err != nil {
			g.log.Error("dns: cannot set the public address in records", "err", err)
		}
	}
	if g.proxy != nil {
		g.proxy.SetPublicAddrs(a)
	}
	if g.relaySetPublic != nil {
		g.relaySetPublic(a)
	}
}

func (g *gateway) startDNS() error {
	srv, setPublic, err := g.cfg.DNS.Build(g.log.With("part", "dns"))
	if err != nil {
		return err
	}
	g.dns, g.dnsSetPublic = srv, setPublic
	if g.public.IsValid() {
		if err := setPublic(g.public); err != nil {
			return err
		}
	}
	for _, a := range g.cfg.DNS.Listen {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return fmt.Errorf("gateway: dns: %w", err)
		}
		// TCP on the same address and port as UDP, also when the port was 0.
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			return fmt.Errorf("gateway: dns: %w", err)
		}
		g.dnsAddrs = append(g.dnsAddrs, pc.LocalAddr())
		g.serve("dns/udp", func() error { return srv.ServePacket(pc) }, dnssplit.ErrServerClosed)
		g.serve("dns/tcp", func() error { return srv.Serve(l) }, dnssplit.ErrServerClosed)
		g.log.Info("dns listening", "addr", pc.LocalAddr().String())
	}
	return nil
}

func (g *gateway) startProxy() error {
	p, err := g.cfg.Proxy.Build(g.log.With("part", "proxy"))
	if err != nil {
		return err
	}
	g.proxy = p
	if g.public.IsValid() {
		p.SetPublicAddrs(g.public)
	}
	listen := func(addrs []string, proto proxy.Protocol) error {
		for _, a := range addrs {
			l, err := proxy.Listen("tcp", a)
			if err != nil {
				return fmt.Errorf("gateway: proxy: %w", err)
			}
			g.proxyAddrs = append(g.proxyAddrs, l.Addr())
			g.serve("proxy", func() error { return p.ServeProtocol(l, proto) }, proxy.ErrServerClosed)
			g.log.Info("proxy listening", "addr", l.Addr().String(), "protocol", proto.String())
		}
		return nil
	}
	if err := listen(g.cfg.Proxy.TLS, proxy.ProtocolTLS); err != nil {
		return err
	}
	return listen(g.cfg.Proxy.HTTP, proxy.ProtocolHTTP)
}

func (g *gateway) startRelay(ctx context.Context) error {
	srv, setPublic, err := g.cfg.Relay.Build(g.log.With("part", "relay"))
	if err != nil {
		return err
	}
	g.relay, g.relaySetPublic = srv, setPublic
	if g.public.IsValid() {
		setPublic(g.public)
	}
	g.serve("relay", func() error { return g.cfg.Relay.Serve(ctx, srv, relayDrain) }, relay.ErrServerClosed)
	g.log.Info("relay listening", "addrs", g.cfg.Relay.Listen)
	return nil
}

// serve runs fn in a goroutine the gateway owns; an error other than the
// package's "closed" sentinel marks the gateway unhealthy.
func (g *gateway) serve(part string, fn func() error, closed error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, closed) {
			g.log.Error("serving stopped", "part", part, "err", err)
			g.mu.Lock()
			if g.health == nil {
				g.health = fmt.Errorf("%s: %w", part, err)
			}
			g.mu.Unlock()
		}
	}()
}

// healthy is nil while every part serves.
func (g *gateway) healthy() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.health
}

// reload applies a new configuration: proxy routes and DNS records are
// swapped atomically; everything is validated first, and on any error the
// running configuration stays as it was.
func (g *gateway) reload(next *config.File) error {
	g.mu.Lock()
	cur := g.cfg
	public := g.public
	g.mu.Unlock()
	if (cur.DNS == nil) != (next.DNS == nil) || (cur.Proxy == nil) != (next.Proxy == nil) ||
		(cur.Relay == nil) != (next.Relay == nil) {
		return errors.New("gateway: adding or removing a section needs a restart")
	}
	var dnsApply func()
	if next.DNS != nil {
		apply, err := g.prepareDNS(next.DNS, public)
		if err != nil {
			return err
		}
		dnsApply = apply
	}
	if next.Proxy != nil {
		if err := next.Proxy.Apply(g.proxy, g.log.With("part", "proxy")); err != nil {
			return err
		}
	}
	if dnsApply != nil {
		dnsApply()
	}
	for _, part := range needsRestart(cur, next) {
		g.log.Warn("reload: this change takes effect at the next restart", "changed", part)
	}
	g.mu.Lock()
	g.cfg = next
	g.mu.Unlock()
	return nil
}

// needsRestart names the parts of a new configuration that a reload does
// not apply (listeners, the NAT probe, the relay), so the operator is told
// rather than left wondering.
func needsRestart(cur, next *config.File) []string {
	var out []string
	if !reflect.DeepEqual(cur.NAT, next.NAT) {
		out = append(out, "nat")
	}
	if cur.DNS != nil && next.DNS != nil && !slices.Equal(cur.DNS.Listen, next.DNS.Listen) {
		out = append(out, "dns.listen")
	}
	if cur.Proxy != nil && next.Proxy != nil &&
		(!slices.Equal(cur.Proxy.TLS, next.Proxy.TLS) || !slices.Equal(cur.Proxy.HTTP, next.Proxy.HTTP)) {
		out = append(out, "proxy.tls/proxy.http")
	}
	if !reflect.DeepEqual(cur.Relay, next.Relay) {
		out = append(out, "relay")
	}
	if cur.Metrics != next.Metrics {
		out = append(out, "metrics")
	}
	if !reflect.DeepEqual(cur.Demo, next.Demo) {
		out = append(out, "demo")
	}
	return out
}

// shutdown stops every part, waiting for their goroutines until ctx is done.
func (g *gateway) shutdown(ctx context.Context) error {
	g.cancel()
	var errs []error
	if g.proxy != nil {
		errs = append(errs, ignoreClosed(g.proxy.Shutdown(ctx)))
	}
	if g.dns != nil {
		errs = append(errs, ignoreClosed(g.dns.Shutdown(ctx)))
	}
	if g.stun != nil {
		errs = append(errs, ignoreClosed(g.stun.Shutdown(ctx)))
	}
	if g.metrics != nil {
		errs = append(errs, g.metrics.shutdown(ctx))
	}
	if g.demo != nil {
		g.demo.shutdown(ctx)
	}
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

func ignoreClosed(err error) error {
	if errors.Is(err, dnssplit.ErrServerClosed) || errors.Is(err, proxy.ErrServerClosed) ||
		errors.Is(err, relay.ErrServerClosed) || errors.Is(err, nat.ErrServerClosed) ||
		errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// prepareDNS builds the DNS data of a new configuration without touching the
// running server, and returns the function that swaps it in.
func (g *gateway) prepareDNS(next *config.DNS, public netip.Addr) (func(), error) {
	srv, setPublic, err := next.Build(g.log.With("part", "dns"))
	if err != nil {
		return nil, err
	}
	if public.IsValid() {
		if err := setPublic(public); err != nil {
			return nil, err
		}
	}
	return func() {
		g.dns.SetViews(srv.Views)
		g.mu.Lock()
		g.dnsSetPublic = setPublic
		g.mu.Unlock()
	}, nil
}
