package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hairpin-go/hairpin/relay"
	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"
)

// Relay is the `relay:` section: a TURN relay (package relay).
//
//	relay:
//	  listen: ["0.0.0.0:3478"]          # UDP and TCP
//	  tlsListen: ["0.0.0.0:5349"]       # needs tls
//	  tls: {cert: /etc/turn/cert.pem, key: /etc/turn/key.pem}
//	  realm: example.com
//	  secret: "change-me"               # TURN REST API shared secret
//	  secrets: ["next", "previous"]     # more live secrets, for rotation
//	  users: {alice: "password"}        # static long-term users
//	  public: "{public}"                # or "203.0.113.1"; advertised relay address
//	  relayAddress: "192.168.1.10"      # where relay sockets bind
//	  relayPorts: "49152-65535"
//	  allowPeers: ["192.168.1.30/32"]   # exempt from the built-in deny list
//	  denyPeers: []                     # extra prefixes to deny
//	  maxCredentialLifetime: 48h
//	  limits: {allocationsPerUser: 64, bandwidth: 2000000}
type Relay struct {
	Listen                []string          `yaml:"listen"`
	TLSListen             []string          `yaml:"tlsListen"`
	TLS                   *RelayTLS         `yaml:"tls"`
	Realm                 string            `yaml:"realm"`
	Secret                string            `yaml:"secret"`
	Secrets               []string          `yaml:"secrets"`
	Users                 map[string]string `yaml:"users"`
	Public                string            `yaml:"public"`
	RelayAddress          string            `yaml:"relayAddress"`
	RelayPorts            string            `yaml:"relayPorts"`
	AllowPeers            []string          `yaml:"allowPeers"`
	DenyPeers             []string          `yaml:"denyPeers"`
	MaxCredentialLifetime string            `yaml:"maxCredentialLifetime"`
	ReadBatch             int               `yaml:"readBatch"` // datagrams per recvmmsg; 0: one at a time
	Limits                RelayLimits       `yaml:"limits"`
	// Credentials optionally serves TURN REST credentials to web apps.
	Credentials *RelayCredentials `yaml:"credentials"`

	root *yaml.Node // the document, for the lines of Build's errors
}

// RelayCredentials is relay.credentials: an HTTP endpoint, GET /credentials,
// that hands out TURN REST API credentials as an RTCIceServer JSON object
// for a web app's RTCPeerConnection (package relay's CredentialsHandler).
// It gives relay credentials to whoever may ask, so who may ask is written
// down (allow) and it belongs behind the web app's own authentication.
//
//	credentials:
//	  listen: "192.168.1.10:8088"
//	  allow: ["192.168.1.0/24"]      # the web app's network; required
//	  hostname: turn.example.com     # the name in the relay's certificate
//	  tlsPort: 443                   # public port of TURN over TLS (e.g. through the SNI proxy)
//	  ttl: 24h
//	  uris: []                       # the TURN URIs to hand out, if not this relay's
//
// Behind a CGN (no inbound port at home) the relay that internet peers can
// reach runs at the edge, with the same relay.secret; uris then names it,
// for example ["turn:turn.example.com:3478?transport=udp",
// "turns:turn.example.com:443?transport=tcp"], and the credentials this
// endpoint signs are valid there.
type RelayCredentials struct {
	Listen string   `yaml:"listen"`
	Allow  []string `yaml:"allow"`
	// Hostname is the relay's name as browsers see it. With it the URIs
	// name the host, not an IP address: Chromium refuses turns: with an IP
	// the certificate does not name, and Firefox ignores it.
	Hostname string `yaml:"hostname"`
	// TLSPort is the public port of TURN over TLS: turns:hostname:tlsPort.
	// If zero, the port of the first relay.tlsListen address.
	TLSPort int `yaml:"tlsPort"`
	// TTL is the lifetime of issued credentials ("24h", the default).
	TTL string `yaml:"ttl"`
	// URIs, if set, are the TURN URIs handed out instead of this relay's
	// (a relay elsewhere that shares relay.secret, such as the edge's).
	URIs []string `yaml:"uris"`
}

// RelayTLS is relay.tls: PEM certificate chain and key files.
type RelayTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// RelayLimits is relay.limits; zero keeps the relay's default, -1 removes
// the limit. Durations are strings such as "10m".
type RelayLimits struct {
	AllocationsPerUser       int     `yaml:"allocationsPerUser"`
	Allocations              int     `yaml:"allocations"`
	PermissionsPerAllocation int     `yaml:"permissionsPerAllocation"`
	Bandwidth                int64   `yaml:"bandwidth"` // bytes per second per allocation and direction
	Lifetime                 string  `yaml:"lifetime"`
	UnauthorizedBurst        int     `yaml:"unauthorizedBurst"`
	UnauthorizedRate         float64 `yaml:"unauthorizedRate"`
	HandshakeTimeout         string  `yaml:"handshakeTimeout"`
	ConnsPerSource           int     `yaml:"connsPerSource"`
	TrackedUsers             int     `yaml:"trackedUsers"`
}

func (s *Relay) validate() error {
	_, err := s.server(nil, false)
	return err
}

// server builds the relay.Server the section describes, collecting every
// field error. With readFiles it loads the TLS certificate and key.
func (s *Relay) server(logger *slog.Logger, readFiles bool) (*relay.Server, error) {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	srv := &relay.Server{Realm: s.Realm, Logger: logger}

	if len(s.Listen) == 0 && len(s.TLSListen) == 0 {
		add(Errorf("relay.listen", nil, "want at least one ip:port to listen on"))
	}
	for i, a := range s.Listen {
		relayCheckListen(fmt.Sprintf("relay.listen[%d]", i), a, add)
	}
	for i, a := range s.TLSListen {
		relayCheckListen(fmt.Sprintf("relay.tlsListen[%d]", i), a, add)
	}
	if len(s.TLSListen) > 0 && s.TLS == nil {
		add(Errorf("relay.tlsListen", nil, "needs relay.tls with cert and key"))
	}
	if s.TLS != nil {
		if s.TLS.Cert == "" {
			add(Errorf("relay.tls.cert", nil, "want a PEM certificate file"))
		}
		if s.TLS.Key == "" {
			add(Errorf("relay.tls.key", nil, "want a PEM key file"))
		}
		if readFiles && s.TLS.Cert != "" && s.TLS.Key != "" {
			cert, err := tls.LoadX509KeyPair(s.TLS.Cert, s.TLS.Key)
			if err != nil {
				add(Errorf("relay.tls", nil, "%v", err))
			} else {
				srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			}
		}
	}
	if strings.ContainsAny(s.Realm, "\"\n") {
		add(Errorf("relay.realm", s.Realm, "quotes and newlines are not allowed"))
	}
	if s.Secret != "" {
		srv.Secrets = append(srv.Secrets, s.Secret)
	}
	for i, sec := range s.Secrets {
		if sec == "" {
			add(Errorf(fmt.Sprintf("relay.secrets[%d]", i), sec, "empty secret"))
			continue
		}
		srv.Secrets = append(srv.Secrets, sec)
	}
	if len(s.Users) > 0 {
		srv.Users = make(map[string]string, len(s.Users))
	}
	names := make([]string, 0, len(s.Users))
	for name := range s.Users {
		names = append(names, name)
	}
	sort.Strings(names) // errors in a stable order
	for _, name := range names {
		pw := s.Users[name]
		if name == "" || pw == "" {
			add(Errorf("relay.users."+name, name, "want a user name and a non-empty password"))
			continue
		}
		srv.Users[name] = pw
	}
	if len(srv.Secrets) == 0 && len(srv.Users) == 0 {
		add(Errorf("relay", nil, "needs secret, secrets or users: without credentials every allocation is refused"))
	}
	switch s.Public {
	case "", PublicPlaceholder:
	default:
		a, err := netip.ParseAddr(s.Public)
		if err != nil {
			add(Errorf("relay.public", s.Public, "want an IP address or %q: %v", PublicPlaceholder, err))
		}
		srv.Public = a
	}
	if s.RelayAddress != "" {
		a, err := netip.ParseAddr(s.RelayAddress)
		if err != nil {
			add(Errorf("relay.relayAddress", s.RelayAddress, "want an IP address: %v", err))
		}
		srv.RelayAddr = a
	}
	if s.RelayPorts != "" {
		r, err := parsePortRange(s.RelayPorts)
		if err != nil {
			add(Errorf("relay.relayPorts", s.RelayPorts, "%v", err))
		}
		srv.RelayPorts = r
	}
	srv.Peers.Allow = prefixes("relay.allowPeers", s.AllowPeers, add)
	srv.Peers.Deny = prefixes("relay.denyPeers", s.DenyPeers, add)
	if s.ReadBatch < 0 || s.ReadBatch > 64 {
		add(Errorf("relay.readBatch", s.ReadBatch, "want 0 to 64"))
	}
	srv.ReadBatch = s.ReadBatch
	srv.MaxCredentialLifetime = duration("relay.maxCredentialLifetime", s.MaxCredentialLifetime, false, add)

	l := s.Limits
	for _, n := range []struct {
		key string
		v   int64
	}{
		{"allocationsPerUser", int64(l.AllocationsPerUser)}, {"allocations", int64(l.Allocations)},
		{"permissionsPerAllocation", int64(l.PermissionsPerAllocation)}, {"bandwidth", l.Bandwidth},
		{"unauthorizedBurst", int64(l.UnauthorizedBurst)}, {"connsPerSource", int64(l.ConnsPerSource)},
		{"trackedUsers", int64(l.TrackedUsers)},
	} {
		if n.v < -1 {
			add(Errorf("relay.limits."+n.key, n.v, "want a positive number, 0 for the default or -1 for no limit"))
		}
	}
	if l.UnauthorizedRate < 0 && l.UnauthorizedRate != -1 {
		add(Errorf("relay.limits.unauthorizedRate", l.UnauthorizedRate, "want a positive rate, 0 for the default or -1 for no limit"))
	}
	srv.Limits = relay.Limits{
		AllocationsPerUser:       l.AllocationsPerUser,
		Allocations:              l.Allocations,
		PermissionsPerAllocation: l.PermissionsPerAllocation,
		Bandwidth:                l.Bandwidth,
		Lifetime:                 duration("relay.limits.lifetime", l.Lifetime, false, add),
		UnauthorizedBurst:        l.UnauthorizedBurst,
		UnauthorizedRate:         l.UnauthorizedRate,
		HandshakeTimeout:         duration("relay.limits.handshakeTimeout", l.HandshakeTimeout, false, add),
		ConnsPerSource:           l.ConnsPerSource,
		TrackedUsers:             l.TrackedUsers,
	}
	if lt := srv.Limits.Lifetime; lt > time.Hour {
		add(Errorf("relay.limits.lifetime", l.Lifetime, "at most 1h (RFC 8656 caps allocation lifetimes)"))
	}
	if c := s.Credentials; c != nil {
		add(c.validate(srv))
	}
	if err := join(errs...); err != nil {
		return nil, err
	}
	return srv, nil
}

func (c *RelayCredentials) validate(srv *relay.Server) error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if _, err := netip.ParseAddrPort(c.Listen); err != nil {
		add(Errorf("relay.credentials.listen", c.Listen, "want ip:port"))
	}
	if c.Allow == nil {
		add(Errorf("relay.credentials.allow", nil, "missing: list the networks that may fetch relay credentials (the web app's)"))
	}
	prefixes("relay.credentials.allow", c.Allow, add)
	if len(srv.Secrets) == 0 {
		add(Errorf("relay.credentials", nil, "needs relay.secret or relay.secrets to sign credentials with"))
	}
	if c.Hostname != "" {
		if _, ok := dns.IsDomainName(c.Hostname); !ok || strings.ContainsAny(c.Hostname, " /:@?#") {
			add(Errorf("relay.credentials.hostname", c.Hostname, "want a host name"))
		}
	}
	if c.TLSPort < 0 || c.TLSPort > 65535 {
		add(Errorf("relay.credentials.tlsPort", c.TLSPort, "want 1 to 65535"))
	}
	duration("relay.credentials.ttl", c.TTL, false, add)
	for i, u := range c.URIs {
		if err := checkTURNURI(u); err != nil {
			add(Errorf(fmt.Sprintf("relay.credentials.uris[%d]", i), u, "%v", err))
		}
	}
	return join(errs...)
}

// CredentialsAllow returns relay.credentials.allow, parsed.
func (c *RelayCredentials) CredentialsAllow() []netip.Prefix {
	return prefixes("", c.Allow, func(error) {})
}

// CredentialsTTL returns relay.credentials.ttl, or 0 for the default.
func (c *RelayCredentials) CredentialsTTL() time.Duration { return parsed(c.TTL) }

// URIs returns the TURN URIs a web app is given: with a hostname,
// turn:host:port for the UDP and TCP listeners and turns:host:tlsPort over
// TCP; without, the public address (or the listener's) in turn: URIs, and no
// turns: URI, since browsers refuse TLS to an IP address the certificate
// does not name.
func (s *Relay) URIs(public netip.Addr) []string {
	if c := s.Credentials; c != nil && len(c.URIs) > 0 {
		return slices.Clone(c.URIs)
	}
	var host string
	if c := s.Credentials; c != nil && c.Hostname != "" {
		host = strings.TrimSuffix(c.Hostname, ".")
	}
	var uris []string
	for _, a := range s.Listen {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			continue
		}
		h := host
		if h == "" {
			ip := ap.Addr()
			if public.IsValid() {
				ip = public
			}
			h = netip.AddrPortFrom(ip, 0).Addr().String()
			if ip.Is6() {
				h = "[" + h + "]"
			}
		}
		hp := h + ":" + strconv.Itoa(int(ap.Port()))
		uris = append(uris, "turn:"+hp+"?transport=udp", "turn:"+hp+"?transport=tcp")
	}
	if host != "" {
		port := s.Credentials.TLSPort
		if port == 0 && len(s.TLSListen) > 0 {
			if ap, err := netip.ParseAddrPort(s.TLSListen[0]); err == nil {
				port = int(ap.Port())
			}
		}
		if port != 0 {
			uris = append(uris, "turns:"+host+":"+strconv.Itoa(port)+"?transport=tcp")
		}
	}
	return uris
}

// Build returns the configured relay server, not yet serving, and a function
// the gateway calls with the probed public address whenever it changes; it
// updates the advertised address when public is "{public}" and does nothing
// otherwise. It loads the TLS certificate and key into srv.TLSConfig.
// Listening on s.Listen (UDP and TCP) and s.TLSListen (TLS) is the caller's job.
func (s *Relay) Build(logger *slog.Logger) (*relay.Server, func(netip.Addr), error) {
	srv, err := s.server(logger, true)
	if err != nil {
		return nil, nil, withLines(err, s.root)
	}
	setPublic := func(netip.Addr) {}
	if s.Public == PublicPlaceholder {
		setPublic = srv.SetPublic
	}
	return srv, setPublic, nil
}

func relayCheckListen(path, a string, add func(error)) {
	if _, err := netip.ParseAddrPort(a); err != nil {
		add(Errorf(path, a, "want ip:port: %v", err))
	}
}

func parsePortRange(v string) (relay.PortRange, error) {
	lo, hi, ok := strings.Cut(v, "-")
	if !ok {
		hi = lo
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || l == 0 || h < l {
		return relay.PortRange{}, errors.New(`want "min-max" with 1 <= min <= max <= 65535`)
	}
	return relay.PortRange{Min: uint16(l), Max: uint16(h)}, nil
}

// checkTURNURI checks a TURN URI (RFC 7065): turn: or turns:, a host, an
// optional port and an optional ?transport=udp|tcp.
func checkTURNURI(u string) error {
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || (scheme != "turn" && scheme != "turns") {
		return errors.New(`want turn:host[:port][?transport=udp|tcp] or turns:…`)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	if query != "" && query != "transport=udp" && query != "transport=tcp" {
		return fmt.Errorf("unknown query %q: want transport=udp or transport=tcp", query)
	}
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1] // an IPv6 literal without a port
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want 1 to 65535", port)
		}
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if _, ok := dns.IsDomainName(host); !ok || host == "" || strings.ContainsAny(host, "[]/ ") {
			return fmt.Errorf("host %q: want a host name or IP address", host)
		}
	}
	return nil
}
