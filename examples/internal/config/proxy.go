package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hairpin-go/hairpin/proxy"
	"go.yaml.in/yaml/v3"
)

// Proxy is the `proxy:` section: one public port shared by many backends,
// chosen by TLS SNI or HTTP Host (package proxy).
//
//	proxy:
//	  tls: [":443"]                    # SNI passthrough listeners
//	  http: [":80"]                    # Host-routed plain HTTP listeners
//	  trustProxyFrom: []               # networks whose inbound PROXY headers are believed
//	  routes:
//	    - host: blog.example.com       # exact, *.example.com, or "" for the default route
//	      backends: ["192.168.1.20:443"]
//	      http: ["192.168.1.20:80"]
//	      proxyProtocol: v2            # none | v1 | v2
//	      allow: ["0.0.0.0/0", "::/0"]
//	      alpn: ["acme-tls/1"]         # only clients offering one of these
//	      balance: leastconn           # leastconn | roundrobin | first
//	      healthCheck: {interval: 5s, timeout: 2s, tls: true, serverName: blog.example.com, rise: 2, fall: 3}
type Proxy struct {
	// TLS lists listen addresses ("[ip]:port") routed by SNI.
	TLS []string `yaml:"tls"`
	// HTTP lists listen addresses routed by Host.
	HTTP []string `yaml:"http"`
	// TrustProxyFrom lists networks (or addresses) whose inbound PROXY
	// headers are believed.
	TrustProxyFrom []string `yaml:"trustProxyFrom"`
	// LocalAddrs lists more addresses of ours that backends must never be.
	LocalAddrs []string `yaml:"localAddrs"`
	// PeekTimeout bounds the wait for a ClientHello or request head ("5s").
	PeekTimeout string `yaml:"peekTimeout"`
	// MaxPeekBytes bounds the bytes read to route (default 70 KiB).
	MaxPeekBytes int `yaml:"maxPeekBytes"`
	// MaxConns, MaxConnsPerSource, MaxPendingPeeks, MaxPeeksPerSource and
	// MaxPeeksPerNetwork are limits (0: the library's default, -1: none):
	// open connections, routed connections of one client address, and
	// connections in the routing phase in all, from one address and from
	// one network (/24, /64).
	MaxConns           int `yaml:"maxConns"`
	MaxConnsPerSource  int `yaml:"maxConnsPerSource"`
	MaxPendingPeeks    int `yaml:"maxPendingPeeks"`
	MaxPeeksPerSource  int `yaml:"maxPeeksPerSource"`
	MaxPeeksPerNetwork int `yaml:"maxPeeksPerNetwork"`
	// IdleTimeout closes a routed connection that carried no data either
	// way for this long ("1h", the default; "off": never).
	IdleTimeout string `yaml:"idleTimeout"`
	// HalfCloseTimeout bounds how long one direction stays open after the
	// other finished ("60s", the default; "off": no bound).
	HalfCloseTimeout string `yaml:"halfCloseTimeout"`
	// UserTimeout is TCP_USER_TIMEOUT, how long sent data may stay
	// unacknowledged, and sets the TCP keepalive to match ("2m", the
	// default): it closes connections to peers that vanished.
	UserTimeout string `yaml:"userTimeout"`
	// HTTPIdleTimeout bounds the wait for the next request on a kept-alive
	// HTTP connection ("2m").
	HTTPIdleTimeout string       `yaml:"httpIdleTimeout"`
	Routes          []ProxyRoute `yaml:"routes"`

	root *yaml.Node // the document, for the lines of Build's errors
}

// ProxyRoute is one entry of proxy.routes.
type ProxyRoute struct {
	// Host is an exact name, "*.suffix", or "" for the default route.
	Host string `yaml:"host"`
	// Backends are "host:port" TLS backends; HTTP are plain HTTP backends.
	// A route needs at least one of them.
	Backends []string `yaml:"backends"`
	HTTP     []string `yaml:"http"`
	// ProxyProtocol is none (default), v1 or v2.
	ProxyProtocol string `yaml:"proxyProtocol"`
	// Allow lists the source networks allowed to use the route. It is
	// required, so that access is always written down: everyone is
	// ["0.0.0.0/0", "::/0"]; an empty list [] allows no one.
	Allow []string `yaml:"allow"`
	// ALPN restricts the TLS route to clients offering one of these.
	ALPN []string `yaml:"alpn"`
	// Balance is leastconn (default), roundrobin or first.
	Balance     string            `yaml:"balance"`
	HealthCheck *ProxyHealthCheck `yaml:"healthCheck"`
	// DialTimeout bounds one connect ("3s"); Retries is how many other
	// backends to try after a failed connect.
	DialTimeout string `yaml:"dialTimeout"`
	Retries     int    `yaml:"retries"`
}

// ProxyHealthCheck is proxy.routes[].healthCheck.
type ProxyHealthCheck struct {
	// Interval between checks ("5s"); "off" disables active checks.
	Interval string `yaml:"interval"`
	Timeout  string `yaml:"timeout"`
	// TLS checks with a handshake whose certificate must cover ServerName
	// (default: the route's host, if exact).
	TLS        bool   `yaml:"tls"`
	ServerName string `yaml:"serverName"`
	Rise       int    `yaml:"rise"`
	Fall       int    `yaml:"fall"`
}

func (s *Proxy) validate() error {
	_, _, err := s.build(nil)
	return err
}

// Build returns a proxy configured by the section, routes installed. The
// caller listens on s.TLS and s.HTTP (proxy.Listen, for SO_REUSEPORT) and
// calls p.ServeProtocol(l, proxy.ProtocolTLS) or (l, proxy.ProtocolHTTP) for
// each listener; one *proxy.Proxy serves them all. The gateway reports the
// NAT's public address with p.SetPublicAddrs.
func (s *Proxy) Build(logger *slog.Logger) (*proxy.Proxy, error) {
	p, routes, err := s.build(logger)
	if err != nil {
		return nil, withLines(err, s.root)
	}
	if err := p.SetRoutes(routes); err != nil {
		return nil, err
	}
	return p, nil
}

// Apply validates the section's routes and swaps them into p atomically
// (the reload path: connections already routed are not touched; listener
// and limit changes need a restart).
func (s *Proxy) Apply(p *proxy.Proxy, logger *slog.Logger) error {
	_, routes, err := s.build(logger)
	if err != nil {
		return withLines(err, s.root)
	}
	return p.SetRoutes(routes)
}

func (s *Proxy) build(logger *slog.Logger) (*proxy.Proxy, []proxy.Route, error) {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	p := &proxy.Proxy{
		Logger:             logger,
		MaxPeekBytes:       s.MaxPeekBytes,
		MaxConns:           s.MaxConns,
		MaxConnsPerSource:  s.MaxConnsPerSource,
		MaxPendingPeeks:    s.MaxPendingPeeks,
		MaxPeeksPerSource:  s.MaxPeeksPerSource,
		MaxPeeksPerNetwork: s.MaxPeeksPerNetwork,
	}
	for _, l := range []struct {
		key string
		v   int
	}{
		{"maxConns", s.MaxConns}, {"maxConnsPerSource", s.MaxConnsPerSource}, {"maxPendingPeeks", s.MaxPendingPeeks},
		{"maxPeeksPerSource", s.MaxPeeksPerSource}, {"maxPeeksPerNetwork", s.MaxPeeksPerNetwork},
	} {
		if l.v < -1 {
			add(Errorf("proxy."+l.key, l.v, "want a positive number, 0 for the default or -1 for no limit"))
		}
	}
	for _, l := range []struct {
		path  string
		addrs []string
	}{{"proxy.tls", s.TLS}, {"proxy.http", s.HTTP}} {
		for i, a := range l.addrs {
			if err := checkListenAddr(a); err != nil {
				add(Errorf(fmt.Sprintf("%s[%d]", l.path, i), a, "%v", err))
			}
		}
	}
	p.TrustProxyFrom = prefixes("proxy.trustProxyFrom", s.TrustProxyFrom, add)
	for i, a := range s.LocalAddrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			add(Errorf(fmt.Sprintf("proxy.localAddrs[%d]", i), a, "want an IP address"))
			continue
		}
		p.LocalAddrs = append(p.LocalAddrs, ip)
	}
	p.PeekTimeout = duration("proxy.peekTimeout", s.PeekTimeout, false, add)
	p.HTTPIdleTimeout = duration("proxy.httpIdleTimeout", s.HTTPIdleTimeout, false, add)
	p.IdleTimeout = duration("proxy.idleTimeout", s.IdleTimeout, true, add)
	p.HalfCloseTimeout = duration("proxy.halfCloseTimeout", s.HalfCloseTimeout, true, add)
	if d := duration("proxy.userTimeout", s.UserTimeout, false, add); d > 0 {
		p.UserTimeout = d
		p.KeepAlive = net.KeepAliveConfig{Enable: true, Idle: d / 2, Interval: max(d/8, time.Second), Count: 4}
	}
	if s.MaxPeekBytes < 0 {
		add(Errorf("proxy.maxPeekBytes", s.MaxPeekBytes, "must not be negative"))
	}

	var routes []proxy.Route
	firstAt := map[string]string{} // route key -> path of the route that has it
	for i, r := range s.Routes {
		path := fmt.Sprintf("proxy.routes[%d]", i)
		rs, err := r.build(path, logger)
		if err != nil {
			add(err)
			continue
		}
		for _, rt := range rs {
			k := routeKey(rt)
			if other, dup := firstAt[k]; dup {
				where := other
				if s.root != nil {
					where = fmt.Sprintf("%s (line %d)", other, lineOf(s.root, other))
				}
				add(Errorf(path+".host", r.Host, "the same %s route as %s: one of them would never be used", rt.Protocol, where))
				break
			}
			firstAt[k] = path
		}
		routes = append(routes, rs...)
	}
	return p, routes, join(errs...)
}

func (r *ProxyRoute) build(path string, logger *slog.Logger) ([]proxy.Route, error) {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if err := proxy.CheckHost(r.Host); err != nil {
		add(Errorf(path+".host", r.Host, "%v", err))
	}
	if len(r.Backends) == 0 && len(r.HTTP) == 0 {
		add(Errorf(path, nil, "a route needs backends, http, or both"))
	}
	if len(r.ALPN) > 0 && len(r.Backends) == 0 {
		add(Errorf(path+".alpn", nil, "alpn applies to TLS backends; this route has none"))
	}
	for _, b := range []struct {
		key   string
		addrs []string
	}{{"backends", r.Backends}, {"http", r.HTTP}} {
		for i, a := range b.addrs {
			if err := checkBackendAddr(a); err != nil {
				add(Errorf(fmt.Sprintf("%s.%s[%d]", path, b.key, i), a, "%v", err))
			}
		}
	}
	for i, a := range r.ALPN {
		if a == "" || len(a) > 255 {
			add(Errorf(fmt.Sprintf("%s.alpn[%d]", path, i), a, "want a protocol name of 1 to 255 bytes"))
		}
	}
	pp, err := proxy.ParseProxyProtocol(r.ProxyProtocol)
	if err != nil {
		add(Errorf(path+".proxyProtocol", r.ProxyProtocol, "want none, v1 or v2"))
	}
	bal, err := proxy.ParseBalance(r.Balance)
	if err != nil {
		add(Errorf(path+".balance", r.Balance, "want leastconn, roundrobin or first"))
	}
	if r.Allow == nil {
		// Closed by default: who may reach a backend is written down, never
		// implied. Everyone is ["0.0.0.0/0", "::/0"].
		add(Errorf(path+".allow", nil, `missing: list the source networks allowed (["0.0.0.0/0", "::/0"] for everyone)`))
	}
	allow := prefixes(path+".allow", r.Allow, add)
	if r.Allow != nil && len(r.Allow) == 0 {
		// proxy.Route treats an empty Allow as everyone; "allow: []" means
		// no one. The unspecified addresses are never a TCP source, so every
		// client is denied (and logged) while the route still holds its name.
		allow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128")}
	}
	dial := duration(path+".dialTimeout", r.DialTimeout, false, add)
	var hc proxy.HealthCheck
	if h := r.HealthCheck; h != nil {
		hc.Interval = duration(path+".healthCheck.interval", h.Interval, true, add)
		hc.Timeout = duration(path+".healthCheck.timeout", h.Timeout, false, add)
		hc.TLS, hc.ServerName, hc.Rise, hc.Fall = h.TLS, h.ServerName, h.Rise, h.Fall
		if hc.TLS && hc.ServerName == "" && r.Host != "" && r.Host[0] != '*' {
			hc.ServerName = r.Host
		}
		if h.Rise < 0 || h.Fall < 0 {
			add(Errorf(path+".healthCheck", nil, "rise and fall must not be negative"))
		}
	}
	if len(errs) > 0 {
		return nil, join(errs...)
	}
	pool := func(addrs []string, check proxy.HealthCheck) *proxy.Pool {
		return &proxy.Pool{Backends: addrs, Balance: bal, ProxyProtocol: pp, HealthCheck: check,
			DialTimeout: dial, Retries: r.Retries, Logger: logger}
	}
	var out []proxy.Route
	if len(r.Backends) > 0 {
		out = append(out, proxy.Route{Protocol: proxy.ProtocolTLS, Host: r.Host, ALPN: r.ALPN, Allow: allow, Target: pool(r.Backends, hc)})
	}
	if len(r.HTTP) > 0 {
		httpCheck := hc
		httpCheck.TLS = false // plain HTTP backends: a TCP connect
		out = append(out, proxy.Route{Protocol: proxy.ProtocolHTTP, Host: r.Host, Allow: allow, Target: pool(r.HTTP, httpCheck)})
	}
	return out, nil
}

// routeKey is what makes two routes the same: protocol, host after
// normalisation ("BLOG.example.com." is blog.example.com) and ALPN set.
func routeKey(r proxy.Route) string {
	host := r.Host
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		n, _ := proxy.NormalizeName(rest)
		host = "*." + n
	} else if host != "*" {
		host, _ = proxy.NormalizeName(host)
	} else {
		host = ""
	}
	alpn := slices.Clone(r.ALPN)
	slices.Sort(alpn)
	return r.Protocol.String() + " " + host + " " + strings.Join(alpn, ",")
}

func checkListenAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want [ip]:port: %v", err)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return errors.New("want an IP address (or none) before the port")
		}
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return errors.New("want a port from 0 (any) to 65535")
	}
	return nil
}

func checkBackendAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	if host == "" {
		return errors.New("want host:port: missing host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return errors.New("want a port from 1 to 65535")
	}
	return nil
}
