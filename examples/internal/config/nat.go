package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hairpin-go/hairpin/nat"
)

// NAT is the `nat:` section: how the gateway learns its public address and
// the NAT's behaviour (package nat), and optionally an RFC 5780 STUN server.
//
//	nat:
//	  stun: ["stun.example.net:3478", "198.51.100.10:3478"]
//	  public: ""        # a fixed public IP instead of probing
//	  interval: 5m      # how often the gateway probes again
//	  hairpin: true     # run the hairpin test (some firewalls log it as an attack)
//	  tcp: false        # also measure the TCP mapping
//	  timeout: 5s
//	  ipv6: false       # probe over IPv6 instead of IPv4
//	  server:           # optional RFC 5780 STUN server (examples/stunserver)
//	    primary: "192.0.2.1:3478"
//	    alternate: "192.0.2.2:3479"
//	    rateLimit: 200
type NAT struct {
	// STUN lists STUN servers as "host:port" or "host" (port 3478).
	STUN []string `yaml:"stun"`
	// Public is a fixed public IP address. If set, the gateway uses it and
	// does not need to probe for it.
	Public string `yaml:"public"`
	// Interval is how often the gateway probes again, e.g. "5m" (the default).
	Interval string `yaml:"interval"`
	// Hairpin switches the hairpin test; nil means on.
	Hairpin *bool `yaml:"hairpin"`
	// TCP enables the TCP mapping test.
	TCP bool `yaml:"tcp"`
	// Timeout bounds one probe, e.g. "5s" (the default).
	Timeout string `yaml:"timeout"`
	// IPv6 probes over IPv6 instead of IPv4.
	IPv6 bool `yaml:"ipv6"`
	// Lifetime measures how long the NAT keeps an idle UDP mapping (once,
	// in the background: it takes up to twice LifetimeMax). It needs an
	// RFC 5780 server.
	Lifetime bool `yaml:"lifetime"`
	// LifetimeMax bounds that search, e.g. "2m" (the default).
	LifetimeMax string `yaml:"lifetimeMax"`
	// Server optionally configures a STUN server.
	Server *NATServer `yaml:"server"`
	// PortMapping "auto" asks the router to forward the gateway's public
	// ports to this host with PCP, NAT-PMP or UPnP IGD (whichever it
	// answers), keeps the mappings renewed and deletes them at shutdown;
	// "off" (the default) leaves the router alone.
	PortMapping string `yaml:"portMapping"`
	// MapPorts optionally lists what portMapping maps, as "tcp/443",
	// "udp/3478" or "udp/50000-50015". If empty: the ports of the proxy's
	// and the relay's listeners that are not on loopback, and the relay's
	// port range when it has at most MaxAutoRelayPorts ports.
	MapPorts []string `yaml:"mapPorts"`
}

// MapPort is one port nat.portMapping maps.
type MapPort struct {
	Transport nat.Transport
	Port      uint16
}

// MaxAutoRelayPorts bounds the relay port range the gateway maps by itself:
// a router holds a few hundred mappings at most, and asking for the default
// range of 16k would flood it.
const MaxAutoRelayPorts = 64

// maxMapPorts bounds nat.mapPorts for the same reason.
const maxMapPorts = 256

// MapAuto reports whether nat.portMapping is "auto".
func (s *NAT) MapAuto() bool { return s.PortMapping == "auto" }

// MapPortList returns nat.mapPorts parsed (the section must have passed
// validation).
func (s *NAT) MapPortList() []MapPort {
	var out []MapPort
	for _, v := range s.MapPorts {
		ps, _ := parseMapPort(v)
		out = append(out, ps...)
	}
	return out
}

// parseMapPort parses "tcp/443" or "udp/50000-50015".
func parseMapPort(v string) ([]MapPort, error) {
	proto, ports, ok := strings.Cut(v, "/")
	var t nat.Transport
	switch {
	case !ok:
		return nil, errors.New(`want "tcp/PORT", "udp/PORT" or "udp/FIRST-LAST"`)
	case proto == "tcp":
		t = nat.TransportTCP
	case proto == "udp":
		t = nat.TransportUDP
	default:
		return nil, fmt.Errorf("transport %q: want tcp or udp", proto)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l == 0 || h < l {
		return nil, errors.New("want a port from 1 to 65535, or a range FIRST-LAST")
	}
	var out []MapPort
	for p := l; p <= h; p++ {
		out = append(out, MapPort{Transport: t, Port: uint16(p)})
	}
	return out, nil
}

// NATServer is nat.server.
type NATServer struct {
	Primary   string `yaml:"primary"`
	Alternate string `yaml:"alternate"`
	RateLimit int    `yaml:"rateLimit"`
}

// Bounds on nat.interval: probing public STUN servers more often than every
// 10 s is abuse; less often than daily misses address changes for a day.
const (
	minNATInterval     = 10 * time.Second
	maxNATInterval     = 24 * time.Hour
	defaultNATInterval = 5 * time.Minute
	maxNATTimeout      = time.Minute
	// maxNATLifetime: routers keep idle UDP mappings from 30 s to 5 min
	// (RFC 4787 asks for at least 2 min); searching past 10 min only delays.
	maxNATLifetime = 10 * time.Minute
)

func (s *NAT) validate() error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	for i, srv := range s.STUN {
		if err := checkSTUNServer(srv); err != nil {
			add(Errorf(fmt.Sprintf("nat.stun[%d]", i), srv, "%v", err))
		}
	}
	if s.Public != "" {
		a, err := netip.ParseAddr(s.Public)
		switch {
		case err != nil:
			add(Errorf("nat.public", s.Public, "not an IP address"))
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			add(Errorf("nat.public", s.Public, "not a usable public address"))
		}
	}
	if len(s.STUN) == 0 && s.Public == "" {
		add(Errorf("nat.stun", "", "need at least one STUN server, or a fixed nat.public"))
	}
	if d := duration("nat.interval", s.Interval, false, add); d != 0 && (d < minNATInterval || d > maxNATInterval) {
		add(Errorf("nat.interval", s.Interval, "must be between %v and %v", minNATInterval, maxNATInterval))
	}
	if d := duration("nat.lifetimeMax", s.LifetimeMax, false, add); d != 0 && (d < time.Second || d > maxNATLifetime) {
		add(Errorf("nat.lifetimeMax", s.LifetimeMax, "want a duration between 1s and %v", maxNATLifetime))
	}
	if d := duration("nat.timeout", s.Timeout, false, add); d > maxNATTimeout {
		add(Errorf("nat.timeout", s.Timeout, "must be at most %v", maxNATTimeout))
	}
	if s.Server != nil {
		add(s.Server.validate())
	}
	switch s.PortMapping {
	case "", "off", "auto":
	default:
		add(Errorf("nat.portMapping", s.PortMapping, `want "auto" or "off"`))
	}
	n := 0
	for i, v := range s.MapPorts {
		ps, err := parseMapPort(v)
		if err != nil {
			add(Errorf(fmt.Sprintf("nat.mapPorts[%d]", i), v, "%v", err))
		}
		n += len(ps)
	}
	if n > maxMapPorts {
		add(Errorf("nat.mapPorts", n, "%d ports: a router holds a few hundred mappings at most; map at most %d", n, maxMapPorts))
	}
	if len(s.MapPorts) > 0 && !s.MapAuto() {
		add(Errorf("nat.mapPorts", strings.Join(s.MapPorts, ", "), `needs nat.portMapping: auto`))
	}
	return join(errs...)
}

func (s *NATServer) validate() error {
	var errs []error
	p, err := netip.ParseAddrPort(s.Primary)
	if err != nil {
		errs = append(errs, Errorf("nat.server.primary", s.Primary, "want IP:PORT"))
	}
	if s.Alternate != "" {
		a, err := netip.ParseAddrPort(s.Alternate)
		switch {
		case err != nil:
			errs = append(errs, Errorf("nat.server.alternate", s.Alternate, "want IP:PORT"))
		case p.IsValid() && (a.Addr() == p.Addr() || a.Port() == p.Port()):
			errs = append(errs, Errorf("nat.server.alternate", s.Alternate, "must differ from the primary %v in both IP and port", p))
		case p.IsValid() && (a.Port() == 0 || p.Port() == 0 || a.Addr().IsUnspecified() || p.Addr().IsUnspecified()):
			errs = append(errs, Errorf("nat.server.alternate", s.Alternate, "an RFC 5780 server needs specific IPs and fixed ports"))
		case p.IsValid() && a.Addr().Is4() != p.Addr().Is4():
			errs = append(errs, Errorf("nat.server.alternate", s.Alternate, "not in the address family of the primary %v", p))
		}
	}
	if s.RateLimit < -1 {
		errs = append(errs, Errorf("nat.server.rateLimit", s.RateLimit, "want -1 (unlimited), 0 (default) or a positive rate"))
	}
	return join(errs...)
}

func checkSTUNServer(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, "3478"
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return errors.New("empty host")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if len(host) > 253 || strings.ContainsAny(host, " /\\@:") {
		return errors.New("not an IP address or host name")
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 {
			return errors.New("not an IP address or host name")
		}
	}
	return nil
}

// PublicAddr returns the fixed public address, if nat.public is set.
func (s *NAT) PublicAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(s.Public)
	return a, err == nil
}

// ProbeInterval returns nat.interval, or its default of 5 minutes.
func (s *NAT) ProbeInterval() time.Duration {
	if d := parsed(s.Interval); d > 0 {
		return d
	}
	return defaultNATInterval
}

// Client returns the nat.Client the section describes (nil when no STUN
// server is configured). The section must have passed validation (Parse
// does that).
func (s *NAT) Client(logger *slog.Logger) *nat.Client {
	if len(s.STUN) == 0 {
		return nil
	}
	c := &nat.Client{
		Servers:   append([]string(nil), s.STUN...),
		NoHairpin: s.Hairpin != nil && !*s.Hairpin,
		TCP:       s.TCP,
		Logger:    logger,
	}
	if s.IPv6 {
		c.Network = "udp6"
	}
	c.Timeout = parsed(s.Timeout)
	return c
}

// LifetimeClient returns the client for the mapping lifetime search (nil
// unless nat.lifetime is set): Client's settings with Lifetime on.
func (s *NAT) LifetimeClient(logger *slog.Logger) *nat.Client {
	c := s.Client(logger)
	if c == nil || !s.Lifetime {
		return nil
	}
	c.Lifetime = true
	c.LifetimeMax = parsed(s.LifetimeMax)
	return c
}

// STUNServer returns the nat.Server of nat.server, or nil when the section
// has none. Call its ListenAndServe to run it.
func (s *NAT) STUNServer(logger *slog.Logger) *nat.Server {
	if s.Server == nil {
		return nil
	}
	srv := &nat.Server{RateLimit: s.Server.RateLimit, Logger: logger}
	srv.Primary, _ = netip.ParseAddrPort(s.Server.Primary)
	srv.Alternate, _ = netip.ParseAddrPort(s.Server.Alternate)
	return srv
}
