package config

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/hairpin-go/hairpin/proxy"
	"go.yaml.in/yaml/v3"
)

// Edge is the `edge:` section: the public end of the tunnel (proxy.Edge),
// for a machine with a public address that home sites behind a NAT with no
// inbound port dial out to.
//
//	edge:
//	  key: /etc/hairpin/edge.key        # ed25519 PEM (hairpin's own, or openssl genpkey -algorithm ed25519)
//	  listen: [":7443"]                 # agents: QUIC on UDP and TLS on TCP, each address
//	  tls: [":443"]                     # public SNI listeners (TLS passed through)
//	  http: [":80"]                     # public Host listeners
//	  allow: ["0.0.0.0/0", "::/0"]      # who may use the public listeners
//	  agents:
//	    - name: home
//	      key: "ed25519:…"              # the agent's public key (the home gateway logs it)
//	      names: ["blog.example.com", "*.home.example.com"]
//	      maxStreams: 0                 # 0: 4096, negative: no limit
type Edge struct {
	Key    string      `yaml:"key"`
	Listen []string    `yaml:"listen"`
	TLS    []string    `yaml:"tls"`
	HTTP   []string    `yaml:"http"`
	Allow  []string    `yaml:"allow"`
	Agents []EdgeAgent `yaml:"agents"`

	root *yaml.Node
}

// EdgeAgent is one entry of edge.agents.
type EdgeAgent struct {
	Name       string   `yaml:"name"`
	Key        string   `yaml:"key"`
	Names      []string `yaml:"names"`
	MaxStreams int      `yaml:"maxStreams"`
}

// Tunnel is the `tunnel:` section: the home end (proxy.Agent). Client
// connections arriving through the edges are served by the `proxy:`
// section's routes, as LAN clients are, with the real client's address.
//
//	tunnel:
//	  key: /etc/hairpin/agent.key
//	  names: ["blog.example.com"]       # claimed on every edge
//	  transport: auto                   # auto | quic | tcp
//	  keepAlive: 15s                    # below the NAT's UDP mapping lifetime
//	  edges:
//	    - addr: "203.0.113.7:7443"
//	      tcpAddr: ""                   # the TCP fallback's address, if not addr
//	      key: "ed25519:…"              # the edge's public key, pinned
type Tunnel struct {
	Key       string       `yaml:"key"`
	Names     []string     `yaml:"names"`
	Transport string       `yaml:"transport"`
	KeepAlive string       `yaml:"keepAlive"`
	Edges     []TunnelEdge `yaml:"edges"`

	root *yaml.Node
}

// TunnelEdge is one entry of tunnel.edges.
type TunnelEdge struct {
	Addr    string `yaml:"addr"`
	TCPAddr string `yaml:"tcpAddr"`
	Key     string `yaml:"key"`
}

// hostPort checks a "host:port" to dial.
func hostPort(path, v string, add func(error)) {
	h, p, err := net.SplitHostPort(v)
	if err != nil || h == "" || p == "" {
		add(Errorf(path, v, "want host:port, such as 203.0.113.7:7443 or edge.example.net:7443"))
	}
}

func listenAddrs(path string, in []string, add func(error)) {
	for i, a := range in {
		if _, ok := listenAddrPort(a); !ok {
			add(Errorf(fmt.Sprintf("%s[%d]", path, i), a, "want [ip]:port, such as :443 or 0.0.0.0:443"))
		}
	}
}

func publicKey(path, v string, add func(error)) ed25519.PublicKey {
	if v == "" {
		add(Errorf(path, nil, `missing: the peer's public key, "ed25519:…"`))
		return nil
	}
	k, err := proxy.ParsePublicKey(v)
	if err != nil {
		add(Errorf(path, v, "want an ed25519 public key as the other end logs it (ed25519:…)"))
	}
	return k
}

func (s *Edge) validate() error {
	_, _, err := s.build(nil, false)
	return err
}

// Build returns the edge and the public proxy routing its names to it
// (allow applied), the key loaded from its file. The caller serves
// e.ServeQUIC and e.ServeTCP on each s.Listen address and p on s.TLS and
// s.HTTP.
func (s *Edge) Build(logger *slog.Logger) (*proxy.Edge, *proxy.Proxy, error) {
	e, p, err := s.build(logger, true)
	if err != nil {
		return nil, nil, withLines(err, s.root)
	}
	return e, p, nil
}

func (s *Edge) build(logger *slog.Logger, load bool) (*proxy.Edge, *proxy.Proxy, error) {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	e := &proxy.Edge{Logger: logger}
	if s.Key == "" {
		add(Errorf("edge.key", nil, "missing: the edge's key file (ed25519 PEM)"))
	} else if load {
		k, err := proxy.LoadTunnelKey(s.Key)
		if err != nil {
			add(Errorf("edge.key", s.Key, "%v", err))
		}
		e.Key = k
	}
	if len(s.Listen) == 0 {
		add(Errorf("edge.listen", nil, "missing: where agents connect, such as [\":7443\"]"))
	}
	listenAddrs("edge.listen", s.Listen, add)
	listenAddrs("edge.tls", s.TLS, add)
	listenAddrs("edge.http", s.HTTP, add)
	if len(s.TLS)+len(s.HTTP) == 0 {
		add(Errorf("edge.tls", nil, "missing: no public listener in edge.tls or edge.http"))
	}
	if s.Allow == nil {
		add(Errorf("edge.allow", nil, `missing: list the source networks allowed (["0.0.0.0/0", "::/0"] for everyone)`))
	}
	allow := prefixes("edge.allow", s.Allow, add)
	if s.Allow != nil && len(s.Allow) == 0 {
		allow = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128")} // no one
	}
	if len(s.Agents) == 0 {
		add(Errorf("edge.agents", nil, "missing: no agent may connect"))
	}
	names := map[string]string{}
	keys := map[string]string{}
	for i, a := range s.Agents {
		path := fmt.Sprintf("edge.agents[%d]", i)
		if a.Name == "" {
			add(Errorf(path+".name", nil, "missing: a name for logs and status"))
		} else if first, dup := names[a.Name]; dup {
			add(Errorf(path+".name", a.Name, "listed twice (first at %s)", first))
		} else {
			names[a.Name] = path
		}
		k := publicKey(path+".key", a.Key, add)
		if k != nil {
			if first, dup := keys[string(k)]; dup {
				add(Errorf(path+".key", a.Key, "the same key as %s", first))
			}
			keys[string(k)] = path
		}
		if len(a.Names) == 0 {
			add(Errorf(path+".names", nil, "missing: the names the agent may claim"))
		}
		for j, n := range a.Names {
			if err := proxy.CheckTunnelName(n); err != nil {
				add(Errorf(fmt.Sprintf("%s.names[%d]", path, j), n, "want a host name or *.suffix: %v", err))
			}
		}
		e.Agents = append(e.Agents, proxy.EdgeAgent{Name: a.Name, PublicKey: k, Names: a.Names, MaxStreams: a.MaxStreams})
	}
	if len(errs) > 0 {
		return nil, nil, join(errs...)
	}
	p := &proxy.Proxy{Logger: logger}
	routes := e.Routes()
	for i := range routes {
		routes[i].Allow = allow
	}
	if err := p.SetRoutes(routes); err != nil {
		return nil, nil, Errorf("edge.agents", nil, "%v", err)
	}
	return e, p, nil
}

func (s *Tunnel) validate() error {
	_, err := s.build(nil, false)
	return err
}

// Build returns the agent, the key loaded from its file. The caller runs
// it and serves a.Listener() with the `proxy:` section's proxy.
func (s *Tunnel) Build(logger *slog.Logger) (*proxy.Agent, error) {
	a, err := s.build(logger, true)
	if err != nil {
		return nil, withLines(err, s.root)
	}
	return a, nil
}

func (s *Tunnel) build(logger *slog.Logger, load bool) (*proxy.Agent, error) {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	a := &proxy.Agent{Logger: logger, Names: s.Names}
	if s.Key == "" {
		add(Errorf("tunnel.key", nil, "missing: the agent's key file (ed25519 PEM)"))
	} else if load {
		k, err := proxy.LoadTunnelKey(s.Key)
		if err != nil {
			add(Errorf("tunnel.key", s.Key, "%v", err))
		}
		a.Key = k
	}
	if len(s.Names) == 0 {
		add(Errorf("tunnel.names", nil, "missing: the names to claim on the edges"))
	}
	for i, n := range s.Names {
		if err := proxy.CheckTunnelName(n); err != nil {
			add(Errorf(fmt.Sprintf("tunnel.names[%d]", i), n, "want a host name or *.suffix: %v", err))
		}
	}
	tr, err := proxy.ParseTunnelTransport(s.Transport)
	if err != nil {
		add(Errorf("tunnel.transport", s.Transport, "want auto, quic or tcp"))
	}
	a.Transport = tr
	a.KeepAlive = duration("tunnel.keepAlive", s.KeepAlive, false, add)
	if len(s.Edges) == 0 {
		add(Errorf("tunnel.edges", nil, "missing: no edge to connect to"))
	}
	for i, e := range s.Edges {
		path := fmt.Sprintf("tunnel.edges[%d]", i)
		if e.Addr == "" {
			add(Errorf(path+".addr", nil, "missing: the edge's agent listener, host:port"))
		} else {
			hostPort(path+".addr", e.Addr, add)
		}
		if e.TCPAddr != "" {
			hostPort(path+".tcpAddr", e.TCPAddr, add)
		}
		k := publicKey(path+".key", e.Key, add)
		a.Edges = append(a.Edges, proxy.AgentEdge{Addr: e.Addr, TCPAddr: e.TCPAddr, PublicKey: k})
	}
	if len(errs) > 0 {
		return nil, join(errs...)
	}
	return a, nil
}

// tunnelListeners lists the edge's sockets for the clash check.
func (f *File) tunnelListeners() []listener {
	var out []listener
	if e := f.Edge; e != nil {
		for i, a := range e.Listen {
			p := fmt.Sprintf("edge.listen[%d]", i)
			out = append(out, listener{p, "udp", a}, listener{p, "tcp", a})
		}
		for i, a := range e.TLS {
			out = append(out, listener{fmt.Sprintf("edge.tls[%d]", i), "tcp", a})
		}
		for i, a := range e.HTTP {
			out = append(out, listener{fmt.Sprintf("edge.http[%d]", i), "tcp", a})
		}
	}
	return out
}

// validateTunnel checks the edge and tunnel sections; a tunnel needs the
// proxy section, whose routes serve its streams.
func (f *File) validateTunnel() error {
	var errs []error
	if f.Edge != nil {
		f.Edge.root = f.root
		errs = append(errs, f.Edge.validate())
	}
	if f.Tunnel != nil {
		f.Tunnel.root = f.root
		errs = append(errs, f.Tunnel.validate())
		if f.Proxy == nil {
			errs = append(errs, Errorf("tunnel", nil, "needs a proxy: section: its routes serve the connections the edges carry"))
		}
	}
	return join(errs...)
}

// edgeAddrs returns the IP addresses of tunnel.edges (the host of each
// addr and tcpAddr that is an IP literal), without repeats, for {edge}.
func (s *Tunnel) edgeAddrs() []netip.Addr {
	var out []netip.Addr
	for _, e := range s.Edges {
		for _, a := range []string{e.Addr, e.TCPAddr} {
			h, _, err := net.SplitHostPort(a)
			if err != nil {
				continue
			}
			if ip, err := netip.ParseAddr(h); err == nil && !slices.Contains(out, ip.Unmap()) {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
