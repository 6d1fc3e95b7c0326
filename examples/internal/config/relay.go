package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/relay"
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
	_, err := s.server(nil)
	return err
}

// server builds the relay.Server the section describes, collecting every
// field error.
func (s *Relay) server(logger *slog.Logger) (*relay.Server, error) {
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
	for name, pw := range s.Users {
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
	srv.Peers.Allow = relayPrefixes("relay.allowPeers", s.AllowPeers, add)
	srv.Peers.Deny = relayPrefixes("relay.denyPeers", s.DenyPeers, add)
	if s.ReadBatch < 0 || s.ReadBatch > 64 {
		add(Errorf("relay.readBatch", s.ReadBatch, "want 0 to 64"))
	}
	srv.ReadBatch = s.ReadBatch
	srv.MaxCredentialLifetime = relayDuration("relay.maxCredentialLifetime", s.MaxCredentialLifetime, add)

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
		Lifetime:                 relayDuration("relay.limits.lifetime", l.Lifetime, add),
		UnauthorizedBurst:        l.UnauthorizedBurst,
		UnauthorizedRate:         l.UnauthorizedRate,
		HandshakeTimeout:         relayDuration("relay.limits.handshakeTimeout", l.HandshakeTimeout, add),
		ConnsPerSource:           l.ConnsPerSource,
		TrackedUsers:             l.TrackedUsers,
	}
	if lt := srv.Limits.Lifetime; lt > time.Hour {
		add(Errorf("relay.limits.lifetime", l.Lifetime, "at most 1h (RFC 8656 caps allocation lifetimes)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return srv, nil
}

// Build returns the configured relay server, not yet serving, and a function
// the gateway calls with the probed public address whenever it changes; it
// updates the advertised address when public is "{public}" and does nothing
// otherwise. Call Serve to run the server on the configured listeners.
func (s *Relay) Build(logger *slog.Logger) (*relay.Server, func(netip.Addr), error) {
	srv, err := s.server(logger)
	if err != nil {
		return nil, nil, err
	}
	setPublic := func(netip.Addr) {}
	if s.Public == PublicPlaceholder {
		setPublic = srv.SetPublic
	}
	return srv, setPublic, nil
}

// Serve runs srv on every listen (UDP and TCP) and tlsListen address until
// ctx is done, then shuts it down, draining allocations for up to drain.
// It returns the first listener error other than relay.ErrServerClosed.
func (s *Relay) Serve(ctx context.Context, srv *relay.Server, drain time.Duration) error {
	type job struct{ addr, cert, key string }
	var jobs []job
	for _, a := range s.Listen {
		jobs = append(jobs, job{addr: a})
	}
	for _, a := range s.TLSListen {
		jobs = append(jobs, job{addr: a, cert: s.TLS.Cert, key: s.TLS.Key})
	}
	errc := make(chan error, len(jobs))
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if j.cert != "" {
				err = srv.ListenAndServeTLS(j.addr, j.cert, j.key)
			} else {
				err = srv.ListenAndServe(j.addr)
			}
			errc <- err
		}()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	close(errc)
	for err := range errc {
		if first == nil || errors.Is(first, relay.ErrServerClosed) {
			first = err
		}
	}
	if errors.Is(first, relay.ErrServerClosed) {
		return nil
	}
	return first
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

// relayPrefixes parses prefixes; a bare address is its own /32 or /128.
func relayPrefixes(path string, in []string, add func(error)) []netip.Prefix {
	var out []netip.Prefix
	for i, v := range in {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			add(Errorf(fmt.Sprintf("%s[%d]", path, i), v, "want a prefix such as 192.168.1.0/24 or an address"))
			continue
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

func relayDuration(path, v string, add func(error)) time.Duration {
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		add(Errorf(path, v, "want a duration such as 10m or 48h"))
		return 0
	}
	return d
}
