package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/serve"
	"github.com/hairpin-go/hairpin/nat"
	"github.com/hairpin-go/hairpin/proxy"
	"github.com/hairpin-go/hairpin/relay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hairpin-go/hairpin/internal/netcore"
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

	dns      *serve.DNS
	dnsAddrs []net.Addr

	proxy      *serve.Proxy
	proxyAddrs []net.Addr

	relay          *relay.Server
	relaySetPublic func(netip.Addr) // guarded by mu: a reload of relay.public replaces it
	relayAddrs     []net.Addr
	creds          *credentialsServer
	tunnel         tunnelPart   // edge.go
	portmap        *portMapping // portmap.go; nil unless nat.portMapping: auto

	prober  *nat.Client // guarded by mu: a reload may replace it
	stun    *nat.Server
	demo    *demo
	metrics *metricsServer

	runCtx context.Context
	cancel context.CancelFunc // stops the probe loop and the relay
	wg     sync.WaitGroup     // every goroutine the gateway started
	health error              // first serving error, for /healthz; guarded by mu
	// failed receives the first serving error: a part that stops serving
	// ends the process with a non-zero status, so systemd or Kubernetes
	// restart it instead of leaving it half up.
	failed chan error
}

// start brings every configured part up. On error, whatever had started is
// shut down again.
func start(ctx context.Context, cfg *config.File, log *slog.Logger) (_ *gateway, err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g := &gateway{log: log, cfg: cfg, runCtx: runCtx, cancel: cancel, failed: make(chan error, 1)}
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
		if err := g.startRelay(); err != nil {
			return g, err
		}
	}
	if err := g.startTunnel(); err != nil {
		return g, err
	}
	g.startPortMapping()
	if cfg.Relay != nil && cfg.Relay.Credentials != nil {
		if g.creds, err = g.startCredentials(cfg.Relay); err != nil {
			return g, err
		}
	}
	if cfg.Metrics != "" {
		reg := prometheus.NewRegistry()
		// What every Prometheus user expects next to ours: go_* (goroutines,
		// GC, memory) and process_* (CPU, open descriptors, resident memory).
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		g.register(reg)
		if g.metrics, err = startMetrics(cfg.Metrics, reg, g.healthy, log); err != nil {
			return g, fmt.Errorf("gateway: metrics: %w", err)
		}
		log.Info("metrics listening", "addr", g.metrics.addr.String())
	}
	if cfg.NAT != nil {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.probeLoop(runCtx)
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
	if _, fixed := g.cfg.NAT.PublicAddr(); fixed {
		// The address is known; the periodic probe reports the NAT's
		// behaviour without holding up the start.
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
	g.mu.Lock()
	prober := g.prober
	g.mu.Unlock()
	if prober == nil {
		return
	}
	r, err := prober.Probe(ctx)
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

// probeLoop probes again every nat.interval (read at each round, so a
// reload changes it); with a fixed public address and no STUN servers it
// only waits.
func (g *gateway) probeLoop(ctx context.Context) {
	first := true
	for {
		t := time.NewTimer(g.nextProbe(first))
		first = false
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			g.probe(pctx)
			cancel()
		}
	}
}

func (g *gateway) nextProbe(first bool) time.Duration {
	g.mu.Lock()
	known := g.public.IsValid()
	every := g.cfg.NAT.ProbeInterval()
	_, fixed := g.cfg.NAT.PublicAddr()
	g.mu.Unlock()
	switch {
	case first && fixed:
		return time.Second // the start did not probe: report the NAT soon
	case known:
		return every
	}
	return min(every, retryUnknown)
}

// setPublic announces a new public address to every part.
func (g *gateway) setPublic(a netip.Addr) {
	g.mu.Lock()
	g.public = a
	relaySetPublic := g.relaySetPublic
	g.mu.Unlock()
	if g.dns != nil {
		if err := g.dns.SetPublicAddr(a); err != nil {
			g.log.Error("gateway: dns: cannot set the public address in records", "err", err)
		}
	}
	if g.proxy != nil {
		g.proxy.SetPublicAddrs(a)
	}
	if relaySetPublic != nil {
		relaySetPublic(a)
	}
}

func (g *gateway) startDNS() error {
	d, err := serve.NewDNS(g.cfg.DNS, g.public, g.log.With("part", "dns"), g.failPart, g.runCtx)
	if err != nil {
		return err
	}
	if err := d.Listen(g.cfg.DNS.Listen); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.dns, g.dnsAddrs = d, d.Addrs()
	for _, a := range d.Addrs() {
		g.log.Info("dns listening", "addr", a.String())
	}
	return nil
}

func (g *gateway) startProxy() error {
	p, err := serve.NewProxy(g.cfg.Proxy, g.log.With("part", "proxy"), g.failPart)
	if err != nil {
		return err
	}
	if g.public.IsValid() {
		p.SetPublicAddrs(g.public)
	}
	// net.Listen, not proxy.Listen: without SO_REUSEPORT a port another
	// process holds is an error at start, not a split.
	if err := p.Listen(net.Listen); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.proxy, g.proxyAddrs = p, p.Addrs()
	for i, a := range p.Addrs() {
		g.log.Info("proxy listening", "addr", a.String(), "protocol", p.Protocols()[i].String())
	}
	return nil
}

// startRelay binds every relay listener (UDP and TCP on each relay.listen
// address, TLS on each relay.tlsListen) before serving any, so a busy port
// or a bad certificate fails the start with its reason.
func (g *gateway) startRelay() error {
	srv, setPublic, err := g.cfg.Relay.Build(g.log.With("part", "relay"))
	if err != nil {
		return err
	}
	g.relay, g.relaySetPublic = srv, setPublic
	if g.public.IsValid() {
		setPublic(g.public)
	}
	socks, err := serve.ListenRelay(g.cfg.Relay)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.relayAddrs = socks.Addrs()
	socks.Serve(srv, func(part string, fn func() error) { g.serve(part, fn, relay.ErrServerClosed) })
	g.log.Info("relay listening", "addrs", g.relayAddrs)
	return nil
}

// serve runs fn in a goroutine the gateway owns; an error other than the
// package's "closed" sentinel marks the gateway unhealthy.
func (g *gateway) serve(part string, fn func() error, closed error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, closed) {
			g.failPart(part, err)
		}
	}()
}

// failPart records that a part stopped serving: /healthz turns 503 and the
// process ends with a non-zero status.
func (g *gateway) failPart(part string, err error) {
	if g.runCtx.Err() != nil {
		return // shutting down: listeners closing is expected
	}
	err = fmt.Errorf("gateway: %s stopped serving: %w", part, err)
	g.mu.Lock()
	first := g.health == nil
	if first {
		g.health = err
	}
	g.mu.Unlock()
	if first {
		g.failed <- err // buffered for the first error only
	}
}

// healthy is nil while every part serves.
func (g *gateway) healthy() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.health
}

// shutdown stops every part, waiting for their goroutines until ctx is done.
func (g *gateway) shutdown(ctx context.Context) error {
	g.cancel()
	errs := []error{g.tunnel.shutdown(ctx)}
	if g.portmap != nil {
		errs = append(errs, g.portmap.shutdown(ctx))
	}
	if g.proxy != nil {
		errs = append(errs, ignoreClosed(g.proxy.Shutdown(ctx)))
	}
	if g.dns != nil {
		errs = append(errs, ignoreClosed(g.dns.Shutdown(ctx)))
	}
	if g.relay != nil {
		rctx, cancel := context.WithTimeout(ctx, relayDrain)
		if err := g.relay.Shutdown(rctx); errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// Allocations still open after relayDrain are closed: expected.
			g.log.Info("relay: allocations still open after the drain were closed", "drain", relayDrain.String())
		} else {
			errs = append(errs, ignoreClosed(err))
		}
		cancel()
	}
	if g.creds != nil {
		errs = append(errs, g.creds.shutdown(ctx))
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
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return netcore.Join(errs...)
}

func ignoreClosed(err error) error {
	if errors.Is(err, dnssplit.ErrServerClosed) || errors.Is(err, proxy.ErrServerClosed) ||
		errors.Is(err, relay.ErrServerClosed) || errors.Is(err, nat.ErrServerClosed) ||
		errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
