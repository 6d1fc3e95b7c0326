package main

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/hairpin-go/hairpin/nat"
)

// portMapping is nat.portMapping: auto: the router forwards the gateway's
// public ports here, through whichever of PCP, NAT-PMP and UPnP IGD it
// answers, until shutdown.
type portMapping struct {
	pm   *nat.PortMapper
	done chan struct{}
}

// mapPorts returns what nat.portMapping maps: nat.mapPorts, or else the
// ports of the proxy's and the relay's listeners that are not on loopback
// and the relay range when it is small enough.
func (g *gateway) mapPorts() []config.MapPort {
	if ps := g.cfg.NAT.MapPortList(); len(ps) > 0 {
		return ps
	}
	var out []config.MapPort
	for _, a := range append(slices.Clone(g.proxyAddrs), g.relayAddrs...) {
		t := nat.TransportTCP
		if _, udp := a.(*net.UDPAddr); udp {
			t = nat.TransportUDP
		}
		ap := netcore.AddrPort(a)
		if !ap.IsValid() || ap.Addr().IsLoopback() {
			continue
		}
		if mp := (config.MapPort{Transport: t, Port: ap.Port()}); !slices.Contains(out, mp) {
			out = append(out, mp)
		}
	}
	if g.relay != nil && len(out) > 0 {
		r := g.relay.RelayPorts
		switch n := int(r.Max) - int(r.Min) + 1; {
		case r.Min == 0:
			g.log.Warn("nat.portMapping: the relay picks its ports from the whole ephemeral range, too many to map; set relay.relayPorts to a small range (at most 64 ports) or list nat.mapPorts")
		case n > config.MaxAutoRelayPorts:
			g.log.Warn("nat.portMapping: the relay port range is too large to map", "ports", n, "max", config.MaxAutoRelayPorts)
		default:
			for p := int(r.Min); p <= int(r.Max); p++ {
				out = append(out, config.MapPort{Transport: nat.TransportUDP, Port: uint16(p)})
			}
		}
	}
	return out
}

// startPortMapping maps the ports in the background (a router that does
// not answer must not hold the start up) and keeps them until shutdown.
func (g *gateway) startPortMapping() {
	if g.cfg.NAT == nil || !g.cfg.NAT.MapAuto() {
		return
	}
	ports := g.mapPorts()
	if len(ports) == 0 {
		g.log.Warn("nat.portMapping: auto, but no public listener to map (every listener is on loopback) and no nat.mapPorts")
		return
	}
	m := &portMapping{pm: &nat.PortMapper{Logger: g.log.With("part", "portmap")}, done: make(chan struct{})}
	g.portmap = m
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer close(m.done)
		mapped := 0
		for _, p := range ports {
			got, err := m.pm.Map(g.runCtx, p.Transport, p.Port, p.Port, 0)
			if err != nil {
				if g.runCtx.Err() != nil {
					return
				}
				args := []any{"transport", p.Transport, "port", p.Port, "err", err}
				if p.Port < 1024 {
					// miniupnpd's shipped rules allow only 1024-65535, and it
					// does not answer while it looks for another port.
					args = append(args, "hint", "many routers (miniupnpd's default rules) map only ports from 1024 up: allow the port in the router, or forward it by hand")
				}
				g.log.Warn("nat.portMapping: the router did not map the port; forward it by hand", args...)
				continue
			}
			mapped++
			if got.External.Port() != p.Port {
				g.log.Warn("nat.portMapping: the router mapped another external port; clients must use it", "transport", p.Transport, "port", p.Port, "external", got.External.String())
			}
		}
		g.log.Info("nat.portMapping: ports mapped", "mapped", mapped, "asked", len(ports))
	}()
}

// shutdown deletes every mapping, within ctx.
func (m *portMapping) shutdown(ctx context.Context) error {
	<-m.done // Map uses the run context, cancelled by now
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return m.pm.Shutdown(dctx)
}
