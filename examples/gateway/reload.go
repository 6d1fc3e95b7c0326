package main

import (
	"reflect"
	"sort"
	"strings"

	"github.com/hairpin-go/hairpin/examples/internal/config"
)

// liveKeys are the key paths a reload applies while serving; a change
// anywhere else waits for a restart and is named in the log. A path covers
// the keys below it.
var liveKeys = []string{
	// DNS: views and records swap in place; every other setting below swaps
	// the server on the same sockets (see dnsPart).
	"dns.views", "dns.upstreams", "dns.policy", "dns.upstreamTimeout", "dns.trustedProxies",
	"dns.cache", "dns.rateLimit", "dns.transfer", "dns.udpSize", "dns.workers",
	"dns.maxTCPConns", "dns.tcpIdleTimeout", "dns.cookieSecret",
	// Proxy routes swap atomically (connections already routed are untouched).
	"proxy.routes",
	// The probe reads these at each round.
	"nat.stun", "nat.public", "nat.interval", "nat.hairpin", "nat.tcp", "nat.timeout", "nat.ipv6",
	// The credentials endpoint reads its settings at each request.
	"relay.credentials.allow", "relay.credentials.hostname", "relay.credentials.tlsPort", "relay.credentials.ttl",
}

func isLive(path string) bool {
	for _, k := range liveKeys {
		if path == k || strings.HasPrefix(path, k+".") || strings.HasPrefix(path, k+"[") {
			return true
		}
	}
	return false
}

// reload applies a new configuration. Everything is built and validated
// first; on any error the running configuration stays as it was. It
// returns the key paths that changed but wait for a restart.
func (g *gateway) reload(next *config.File) ([]string, error) {
	g.mu.Lock()
	cur := g.cfg
	public := g.public
	g.mu.Unlock()
	changed := diffPaths(cur, next)
	var restart []string
	for _, p := range changed {
		if !isLive(p) {
			restart = append(restart, p)
		}
	}
	// A section added or removed is a restart: nothing runs to take it.
	var dnsApply func() error
	if cur.DNS != nil && next.DNS != nil {
		apply, err := g.dns.prepare(next.DNS, public)
		if err != nil {
			return nil, err
		}
		dnsApply = apply
	}
	if cur.Proxy != nil && next.Proxy != nil {
		if err := next.Proxy.Apply(g.proxy, g.log.With("part", "proxy")); err != nil {
			return nil, err
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
	g.cfg = &kept
	g.mu.Unlock()
	if next.NAT != nil && cur.NAT != nil {
		if a, ok := next.NAT.PublicAddr(); ok && a != public {
			g.setPublic(a)
		}
	}
	return restart, nil
}

// diffPaths returns the key paths whose values differ between two
// configurations, as they are spelt in the file: "dns.listen",
// "relay.limits.bandwidth". Lists and maps are compared whole; a section
// present in one and absent in the other is its own key.
func diffPaths(a, b *config.File) []string {
	var out []string
	diffValue(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "", &out)
	sort.Strings(out)
	return out
}

func diffValue(a, b reflect.Value, path string, out *[]string) {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, path)
			}
			return
		}
		diffValue(a.Elem(), b.Elem(), path, out)
	case reflect.Struct:
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			p := name
			if path != "" {
				p = path + "." + name
			}
			diffValue(a.Field(i), b.Field(i), p, out)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
	}
}
