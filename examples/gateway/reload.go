package main

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/serve"
)

// liveKeys are the key paths a reload applies while serving; a change
// anywhere else waits for a restart and is named in the log. A path covers
// the keys below it.
var liveKeys = append(serve.DNSLiveKeys(),
	// The probe reads these at each round.
	"nat.stun", "nat.public", "nat.interval", "nat.hairpin", "nat.tcp", "nat.timeout", "nat.ipv6",
	// New allocations get the new advertised address; requests from then on
	// are checked against the new credentials.
	"relay.public", "relay.secret", "relay.secrets", "relay.users",
	// The credentials endpoint reads its settings at each request.
	"relay.credentials.allow", "relay.credentials.hostname", "relay.credentials.tlsPort", "relay.credentials.ttl", "relay.credentials.uris",
	// The edge checks agents against the new list (proxy.Edge.SetAgents).
	"edge.agents",
)

// live returns liveKeys and the proxy keys a reload applies now: routes
// swap atomically (connections already routed are untouched), the other
// settings start a new proxy on the same listeners (see serve.Proxy),
// unless a tunnel pinned it.
func (g *gateway) live() []string {
	keys := slices.Clone(liveKeys)
	if g.proxy != nil {
		return append(keys, g.proxy.LiveKeys()...)
	}
	return append(keys, serve.ProxyLiveKeys()...)
}

// reload applies a new configuration. Everything is built and validated
// first; on any error the running configuration stays as it was. It
// returns the key paths that changed but wait for a restart.
func (g *gateway) reload(next *config.File) ([]string, error) {
	g.mu.Lock()
	cur := g.cfg
	public := g.public
	g.mu.Unlock()
	restart := config.Restart(config.Changed(cur, next), g.live())
	// A section added or removed is a restart: nothing runs to take it.
	var dnsApply func() error
	if cur.DNS != nil && next.DNS != nil {
		apply, err := g.dns.Prepare(next.DNS, public)
		if err != nil {
			return nil, err
		}
		dnsApply = apply
	}
	var proxyApply func() error
	if cur.Proxy != nil && next.Proxy != nil {
		apply, err := g.proxy.Prepare(next.Proxy)
		if err != nil {
			return nil, err
		}
		proxyApply = apply
	}
	var relayCreds func()
	if g.relay != nil && cur.Relay != nil && next.Relay != nil && (next.Relay.Secret != cur.Relay.Secret ||
		!slices.Equal(next.Relay.Secrets, cur.Relay.Secrets) || !maps.Equal(next.Relay.Users, cur.Relay.Users)) {
		srv, _, err := next.Relay.Build(g.log.With("part", "relay"))
		if err != nil {
			return nil, err
		}
		relayCreds = func() {
			g.relay.SetCredentials(srv.Users, srv.Secrets)
			g.log.Info("relay credentials replaced", "users", len(srv.Users), "secrets", len(srv.Secrets))
		}
	}
	var edgeAgents func() error
	if g.tunnel.edge != nil && cur.Edge != nil && next.Edge != nil && !slices.EqualFunc(cur.Edge.Agents, next.Edge.Agents, sameEdgeAgent) {
		e, pub, err := next.Edge.Build(g.log.With("part", "edge"))
		if err != nil {
			return nil, err
		}
		edgeAgents = func() error {
			if err := g.tunnel.edge.SetAgents(e.Agents); err != nil {
				return err
			}
			// The public listeners route the new names to the running
			// edge, with edge.allow as built.
			routes := g.tunnel.edge.Routes()
			if built := pub.Routes(); len(built) > 0 {
				for i := range routes {
					routes[i].Allow = built[0].Allow
				}
			}
			if err := g.tunnel.public.SetRoutes(routes); err != nil {
				return err
			}
			g.log.Info("edge agents replaced", "agents", len(e.Agents))
			return nil
		}
	}
	var prober = g.prober
	if next.NAT != nil {
		prober = next.NAT.Client(g.log.With("part", "nat"))
	}
	if dnsApply != nil {
		if err := dnsApply(); err != nil {
			return nil, err
		}
	}
	if proxyApply != nil {
		if err := proxyApply(); err != nil {
			return nil, err
		}
	}
	if relayCreds != nil {
		relayCreds()
	}
	if edgeAgents != nil {
		if err := edgeAgents(); err != nil {
			return nil, err
		}
	}
	g.mu.Lock()
	// Sections that a restart must add or remove keep their running values.
	kept := *next
	if (cur.NAT == nil) != (next.NAT == nil) {
		kept.NAT = cur.NAT
	} else {
		g.prober = prober
	}
	if (cur.DNS == nil) != (next.DNS == nil) {
		kept.DNS = cur.DNS
	}
	if (cur.Proxy == nil) != (next.Proxy == nil) {
		kept.Proxy = cur.Proxy
	}
	if (cur.Relay == nil) != (next.Relay == nil) {
		kept.Relay = cur.Relay
	}
	if g.relay != nil && cur.Relay != nil && next.Relay != nil && next.Relay.Public != cur.Relay.Public {
		// "{public}" follows the probed address; a fixed one replaces it.
		if next.Relay.Public == config.PublicPlaceholder {
			g.relaySetPublic = g.relay.SetPublic
			g.relay.SetPublic(public)
		} else {
			a, _ := netip.ParseAddr(next.Relay.Public) // validated; "" is the socket's own
			g.relaySetPublic = func(netip.Addr) {}
			g.relay.SetPublic(a)
		}
	}
	g.cfg = &kept
	g.mu.Unlock()
	if next.NAT != nil && cur.NAT != nil {
		if a, ok := next.NAT.PublicAddr(); ok && a != public {
			g.setPublic(a)
		}
	}
	return restart, nil
}

func sameEdgeAgent(a, b config.EdgeAgent) bool {
	return a.Name == b.Name && a.Key == b.Key && a.MaxStreams == b.MaxStreams && slices.Equal(a.Names, b.Names)
}
