package config

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is the whole configuration file. A nil section is absent from the
// file: that part of the gateway does not run.
type File struct {
	NAT   *NAT   `yaml:"nat"`
	DNS   *DNS   `yaml:"dns"`
	Proxy *Proxy `yaml:"proxy"`
	Relay *Relay `yaml:"relay"`
	// Edge and Tunnel are the two ends of the tunnel (edge.go).
	Edge   *Edge   `yaml:"edge"`
	Tunnel *Tunnel `yaml:"tunnel"`

	// Metrics is the address of the Prometheus and /healthz HTTP endpoint;
	// empty means none.
	Metrics string `yaml:"metrics"`

	// Log chooses the log format and level.
	Log Log `yaml:"log"`

	// Demo, if set, makes the gateway run its own demo backends, so that a
	// configuration can show a real answer with no servers of its own.
	Demo *Demo `yaml:"demo"`

	root *yaml.Node // the document, for the lines of errors found later
}

// setRoot gives every section the document, so that Build can name lines.
func (f *File) setRoot(root *yaml.Node) {
	f.root = root
	if f.DNS != nil {
		f.DNS.root = root
		if f.Tunnel != nil {
			f.DNS.edges = f.Tunnel.edgeAddrs()
		}
	}
	if f.Proxy != nil {
		f.Proxy.root = root
	}
	if f.Relay != nil {
		f.Relay.root = root
	}
}

// Demo is the `demo:` section: built-in backends for the quickstart.
type Demo struct {
	// Names are the host names the demo TLS backend's self-signed
	// certificate covers, e.g. ["blog.example.com"].
	Names []string `yaml:"names"`
	// TLS is the address of the demo TLS backend, e.g. "127.0.0.1:8444".
	TLS string `yaml:"tls"`
	// HTTP is the address of the demo plain-HTTP backend, e.g. "127.0.0.1:8081".
	HTTP string `yaml:"http"`
}

func (d *Demo) validate() error {
	var errs []error
	for i, n := range d.Names {
		if n == "" || strings.ContainsAny(n, " /:") {
			errs = append(errs, Errorf(fmt.Sprintf("demo.names[%d]", i), n, "want a host name"))
		}
	}
	for _, a := range []struct{ path, v string }{{"demo.tls", d.TLS}, {"demo.http", d.HTTP}} {
		if a.v == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a.v); err != nil {
			errs = append(errs, Errorf(a.path, a.v, "want ip:port: %v", err))
		}
	}
	return join(errs...)
}

// Log is the `log:` section.
type Log struct {
	// Format is "text" (the default) or "json".
	Format string `yaml:"format"`
	// Level is "debug", "info" (the default), "warn" or "error".
	Level string `yaml:"level"`
}

func (f *File) validate() error {
	var errs []error
	if f.NAT != nil {
		errs = append(errs, f.NAT.validate())
	}
	if f.DNS != nil {
		errs = append(errs, f.DNS.validate())
	}
	if f.Proxy != nil {
		errs = append(errs, f.Proxy.validate())
	}
	if f.Relay != nil {
		errs = append(errs, f.Relay.validate())
	}
	if f.Demo != nil {
		errs = append(errs, f.Demo.validate())
	}
	errs = append(errs, f.validateTunnel())
	if f.Metrics != "" {
		if _, err := netip.ParseAddrPort(f.Metrics); err != nil {
			errs = append(errs, Errorf("metrics", f.Metrics, "want ip:port: %v", err))
		}
	}
	switch f.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, Errorf("log.format", f.Log.Format, `want "text" or "json"`))
	}
	switch f.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, Errorf("log.level", f.Log.Level, `want "debug", "info", "warn" or "error"`))
	}
	errs = append(errs, f.checkListeners())
	return join(errs...)
}

// listener is one socket the file asks for.
type listener struct {
	path    string
	network string // "tcp" or "udp"
	addr    string
}

// listeners lists every socket the sections ask for, in file order.
func (f *File) listeners() []listener {
	var out []listener
	both := func(path, a string) {
		out = append(out, listener{path, "udp", a}, listener{path, "tcp", a})
	}
	tcp := func(path, a string) { out = append(out, listener{path, "tcp", a}) }
	if n := f.NAT; n != nil && n.Server != nil {
		both("nat.server.primary", n.Server.Primary)
		if n.Server.Alternate != "" {
			both("nat.server.alternate", n.Server.Alternate)
		}
	}
	if d := f.DNS; d != nil {
		for i, a := range d.Listen {
			both(fmt.Sprintf("dns.listen[%d]", i), a)
		}
	}
	if p := f.Proxy; p != nil {
		for i, a := range p.TLS {
			tcp(fmt.Sprintf("proxy.tls[%d]", i), a)
		}
		for i, a := range p.HTTP {
			tcp(fmt.Sprintf("proxy.http[%d]", i), a)
		}
	}
	if r := f.Relay; r != nil {
		for i, a := range r.Listen {
			both(fmt.Sprintf("relay.listen[%d]", i), a)
		}
		for i, a := range r.TLSListen {
			tcp(fmt.Sprintf("relay.tlsListen[%d]", i), a)
		}
		if c := r.Credentials; c != nil && c.Listen != "" {
			tcp("relay.credentials.listen", c.Listen)
		}
	}
	out = append(out, f.tunnelListeners()...)
	if f.Metrics != "" {
		tcp("metrics", f.Metrics)
	}
	if d := f.Demo; d != nil {
		if d.TLS != "" {
			tcp("demo.tls", d.TLS)
		}
		if d.HTTP != "" {
			tcp("demo.http", d.HTTP)
		}
	}
	return out
}

// checkListeners refuses two sockets on one address and port, in one
// section or across two: the kernel would refuse the second or, with
// SO_REUSEPORT, split the traffic between them. Port 0 (any) never clashes.
func (f *File) checkListeners() error {
	var errs []error
	type seen struct {
		l  listener
		ap netip.AddrPort
	}
	var prev []seen
	for _, l := range f.listeners() {
		ap, ok := listenAddrPort(l.addr)
		if !ok || ap.Port() == 0 {
			continue // malformed addresses are reported by their section
		}
		for _, p := range prev {
			if p.l.network != l.network || p.ap.Port() != ap.Port() || !overlap(p.ap.Addr(), ap.Addr()) || p.l.path == l.path {
				continue
			}
			where := p.l.path
			if f.root != nil {
				where = fmt.Sprintf("%s (line %d)", p.l.path, lineOf(f.root, p.l.path))
			}
			errs = append(errs, Errorf(l.path, l.addr, "%s port %d is already used by %s", l.network, ap.Port(), where))
			break
		}
		prev = append(prev, seen{l, ap})
	}
	return join(errs...)
}

// listenAddrPort parses "ip:port", "[ip]:port" or ":port" (all addresses).
func listenAddrPort(s string) (netip.AddrPort, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	a := netip.IPv6Unspecified()
	if host != "" {
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, false
		}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), true
}

// overlap reports whether sockets bound to a and b on one port clash: the
// same address, or an unspecified address covering the other (:: covers
// IPv4 too on a dual-stack socket).
func overlap(a, b netip.Addr) bool {
	switch {
	case a == b:
		return true
	case a == netip.IPv6Unspecified() || b == netip.IPv6Unspecified():
		return true
	case a.IsUnspecified():
		return a.Is4() == b.Is4()
	case b.IsUnspecified():
		return a.Is4() == b.Is4()
	}
	return false
}

// Logger returns the logger the `log:` section describes, writing to w.
func (l Log) Logger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(l.Level)) // validated by Parse; "" keeps Info
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
