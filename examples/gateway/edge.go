package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"

	"github.com/hairpin-go/hairpin/proxy"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// tunnelPart runs the `edge:` section (the public end) and the `tunnel:`
// section (the home end, whose streams the `proxy:` section's proxy
// serves), either or both.
type tunnelPart struct {
	edge        *proxy.Edge
	public      *proxy.Proxy
	agentAddrs  []net.Addr // UDP then TCP for each edge.listen address
	publicAddrs []net.Addr
	agent       *proxy.Agent
}

// startTunnel binds every edge socket before serving any (a busy port
// fails the start), then starts the agent.
func (g *gateway) startTunnel() error {
	t := &g.tunnel
	if c := g.cfg.Edge; c != nil {
		log := g.log.With("part", "edge")
		e, pub, err := c.Build(log)
		if err != nil {
			return err
		}
		t.edge, t.public = e, pub
		var closers []func() error
		fail := func(err error) error {
			for _, c := range closers {
				c()
			}
			return fmt.Errorf("gateway: edge: %w", err)
		}
		var pcs []net.PacketConn
		var agentLs, tlsLs, httpLs []net.Listener
		for _, a := range c.Listen {
			pc, err := net.ListenPacket("udp", a)
			if err != nil {
				return fail(err)
			}
			closers = append(closers, pc.Close)
			l, err := net.Listen("tcp", a)
			if err != nil {
				return fail(err)
			}
			closers = append(closers, l.Close)
			pcs, agentLs = append(pcs, pc), append(agentLs, l)
		}
		listen := func(addrs []string, out *[]net.Listener) error {
			for _, a := range addrs {
				l, err := net.Listen("tcp", a)
				if err != nil {
					return err
				}
				closers = append(closers, l.Close)
				*out = append(*out, l)
			}
			return nil
		}
		if err := listen(c.TLS, &tlsLs); err != nil {
			return fail(err)
		}
		if err := listen(c.HTTP, &httpLs); err != nil {
			return fail(err)
		}
		for i, pc := range pcs {
			l := agentLs[i]
			t.agentAddrs = append(t.agentAddrs, pc.LocalAddr(), l.Addr())
			g.serve("edge/quic", func() error { return e.ServeQUIC(pc) }, proxy.ErrEdgeClosed)
			g.serve("edge/tcp", func() error { return e.ServeTCP(l) }, proxy.ErrEdgeClosed)
		}
		for _, l := range tlsLs {
			t.publicAddrs = append(t.publicAddrs, l.Addr())
			g.serve("edge/public", func() error { return pub.ServeProtocol(l, proxy.ProtocolTLS) }, proxy.ErrServerClosed)
		}
		for _, l := range httpLs {
			t.publicAddrs = append(t.publicAddrs, l.Addr())
			g.serve("edge/public", func() error { return pub.ServeProtocol(l, proxy.ProtocolHTTP) }, proxy.ErrServerClosed)
		}
		log.Info("edge listening", "agents", t.agentAddrs, "public", t.publicAddrs,
			"key", proxy.FormatPublicKey(e.PublicKey()))
	}
	if c := g.cfg.Tunnel; c != nil {
		if g.proxy == nil {
			return errors.New("gateway: tunnel: needs the proxy section")
		}
		log := g.log.With("part", "tunnel")
		a, err := c.Build(log)
		if err != nil {
			return err
		}
		t.agent = a
		// The tunnel's listener cannot be duplicated: the proxy serving it
		// stays, and a reload applies only its routes.
		p := g.proxy.Pin()
		g.serve("tunnel/proxy", func() error { return p.Serve(a.Listener()) }, proxy.ErrServerClosed)
		g.serve("tunnel", func() error { return a.Run(g.runCtx) }, proxy.ErrAgentClosed)
		log.Info("tunnel started", "edges", len(c.Edges), "names", c.Names,
			"key", proxy.FormatPublicKey(a.Key.Public().(ed25519.PublicKey)))
	}
	return nil
}

// shutdown stops the agent, then the edge's public proxy and the edge.
func (t *tunnelPart) shutdown(ctx context.Context) error {
	var errs []error
	if t.agent != nil {
		t.agent.Close()
	}
	if t.public != nil {
		errs = append(errs, ignoreClosed(t.public.Shutdown(ctx)))
	}
	if t.edge != nil {
		t.edge.Close()
	}
	return netcore.Join(errs...)
}
