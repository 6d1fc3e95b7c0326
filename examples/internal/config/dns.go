package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/miekg/dns"
)

// The default response rate limit: generous for a person's resolver or a
// few secondaries asking for one site's names (a page load is a handful of
// queries), far below what makes a useful reflector.
const (
	defaultRRLPerSecond = 50
	defaultRRLBurst     = 100
)

// PublicPlaceholder in a DNS record is replaced by the public address the
// gateway learns (and relearns) by probing the NAT.
const PublicPlaceholder = "{public}"

// DNS is the `dns:` section: a split-horizon DNS server (package dnssplit).
//
//	dns:
//	  listen: ["192.168.1.1:53", "203.0.113.1:53"]
//	  upstreams: ["9.9.9.9:53", "tls://149.112.112.112:853#dns.quad9.net"]
//	  views:
//	    - name: inside
//	      networks: ["192.168.1.0/24"]
//	      recursion: true
//	      records: ["blog.example.com. 300 IN A 192.168.1.20"]
//	    - name: outside
//	      networks: ["0.0.0.0/0", "::/0"]
//	      records: ["blog.example.com. 300 IN A {public}"]
type DNS struct {
	// Listen lists ip:port addresses served on both UDP and TCP.
	Listen []string `yaml:"listen"`
	// Upstreams lists resolvers as "ip:port" (port 53 if omitted) or
	// "tls://ip:port#server-name" for DNS over TLS (port 853 if omitted).
	Upstreams []string `yaml:"upstreams"`
	// Policy is "failover" (the default) or "fastest".
	Policy string `yaml:"policy"`
	// UpstreamTimeout is a duration such as "2s".
	UpstreamTimeout string `yaml:"upstreamTimeout"`
	// TrustedProxies lists networks whose EDNS Client Subnet is believed.
	TrustedProxies []string  `yaml:"trustedProxies"`
	Views          []DNSView `yaml:"views"`
	Cache          DNSCache  `yaml:"cache"`
	RateLimit      *DNSRate  `yaml:"rateLimit"`
	Transfer       *DNSXfr   `yaml:"transfer"`
	UDPSize        int       `yaml:"udpSize"`
	Workers        int       `yaml:"workers"`
	MaxTCPConns    int       `yaml:"maxTCPConns"`
	TCPIdleTimeout string    `yaml:"tcpIdleTimeout"`
	// CookieSecret keys DNS cookies (base64); servers sharing an address
	// should share it. Empty: random at start.
	CookieSecret string `yaml:"cookieSecret"`
}

// DNSView is one entry of dns.views.
type DNSView struct {
	Name       string   `yaml:"name"`
	Networks   []string `yaml:"networks"`
	LocalAddrs []string `yaml:"localAddrs"`
	Recursion  bool     `yaml:"recursion"`
	// Records are zone-file lines; {public} stands for the public address.
	Records []string `yaml:"records"`
	// Zones are apexes answered authoritatively (NXDOMAIN with SOA below them).
	Zones []string `yaml:"zones"`
	// ZoneFiles are whole zone files.
	ZoneFiles []DNSZoneFile `yaml:"zoneFiles"`
	// SplitTypes limits the local data to these types ("A"); others pass through.
	SplitTypes []string `yaml:"splitTypes"`
}

// DNSZoneFile is one entry of dns.views[].zoneFiles.
type DNSZoneFile struct {
	Origin string `yaml:"origin"`
	Path   string `yaml:"path"`
}

// DNSCache is dns.cache.
type DNSCache struct {
	Disabled    bool   `yaml:"disabled"`
	MaxEntries  int    `yaml:"maxEntries"`
	MinTTL      string `yaml:"minTTL"`
	MaxTTL      string `yaml:"maxTTL"`
	NegativeTTL string `yaml:"negativeTTL"`
	Stale       string `yaml:"stale"` // duration, or "off"
	// StaleAnswerTimeout is how long to wait for upstreams before answering stale ("1.8s").
	StaleAnswerTimeout string `yaml:"staleAnswerTimeout"`
	HoldNXDOMAIN       bool   `yaml:"holdNXDOMAIN"`
	Prefetch           bool   `yaml:"prefetch"`
	Persist            string `yaml:"persist"`
}

// DNSRate is dns.rateLimit.
//
// Without a rateLimit key a default limit applies (closed by default: an
// answering server on a public address must not be an amplifier):
// defaultRRLPerSecond responses per second per /24 (/56), burst
// defaultRRLBurst, with the networks of views that allow recursion (the
// LAN) exempt. `rateLimit: {off: true}` removes it.
type DNSRate struct {
	// Off removes the limit.
	Off        bool     `yaml:"off"`
	PerSecond  float64  `yaml:"perSecond"`
	Burst      int      `yaml:"burst"`
	Slip       int      `yaml:"slip"`
	IPv4Prefix int      `yaml:"ipv4Prefix"`
	IPv6Prefix int      `yaml:"ipv6Prefix"`
	Exempt     []string `yaml:"exempt"`
}

// DNSXfr is dns.transfer.
type DNSXfr struct {
	Allow []string `yaml:"allow"`
	// TSIG maps key names to base64 secrets.
	TSIG      map[string]string `yaml:"tsig"`
	Notify    []string          `yaml:"notify"`
	NotifyKey string            `yaml:"notifyKey"`
}

func (s *DNS) validate() error {
	_, _, err := s.build(nil, false)
	return err
}

// Build returns the server the section describes and a function that sets
// the address substituted for {public} in records (call it again whenever the
// public address changes; records with {public} are absent until the first
// call). Listening on s.Listen is the caller's job.
func (s *DNS) Build(logger *slog.Logger) (*dnssplit.Server, func(netip.Addr) error, error) {
	return s.build(logger, true)
}

type publicTemplate struct {
	recs  *dnssplit.Records
	lines []string
	path  string
}

func (s *DNS) build(logger *slog.Logger, readFiles bool) (*dnssplit.Server, func(netip.Addr) error, error) {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	srv := &dnssplit.Server{Logger: logger, UDPSize: s.UDPSize, Workers: s.Workers, MaxTCPConns: s.MaxTCPConns}

	for i, a := range s.Listen {
		if _, err := netip.ParseAddrPort(a); err != nil {
			add(Errorf(fmt.Sprintf("dns.listen[%d]", i), a, "want ip:port: %v", err))
		}
	}
	for i, u := range s.Upstreams {
		up, err := parseUpstream(u)
		if err != nil {
			add(Errorf(fmt.Sprintf("dns.upstreams[%d]", i), u, "%v", err))
			continue
		}
		srv.Upstreams = append(srv.Upstreams, up)
	}
	if p, err := dnssplit.ParsePolicy(s.Policy); err != nil {
		add(Errorf("dns.policy", s.Policy, `want "failover" or "fastest"`))
	} else {
		srv.Policy = p
	}
	duration := func(path, v string, dst *time.Duration) {
		if v == "" {
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			add(Errorf(path, v, "want a duration such as 2s or 1h"))
			return
		}
		*dst = d
	}
	duration("dns.upstreamTimeout", s.UpstreamTimeout, &srv.UpstreamTimeout)
	duration("dns.tcpIdleTimeout", s.TCPIdleTimeout, &srv.TCPIdleTimeout)
	srv.TrustedProxies = prefixes("dns.trustedProxies", s.TrustedProxies, add)
	if s.UDPSize != 0 && (s.UDPSize < 512 || s.UDPSize > 65535) {
		add(Errorf("dns.udpSize", s.UDPSize, "want 512 to 65535"))
	}
	for _, n := range []struct {
		path string
		v    int
	}{{"dns.workers", s.Workers}, {"dns.maxTCPConns", s.MaxTCPConns}} {
		if n.v < 0 {
			add(Errorf(n.path, n.v, "must not be negative"))
		}
	}

	c := s.Cache
	srv.Cache = dnssplit.CacheConfig{Disabled: c.Disabled, MaxEntries: c.MaxEntries, HoldNXDOMAIN: c.HoldNXDOMAIN,
		Prefetch: c.Prefetch, PersistPath: c.Persist}
	if c.MaxEntries < 0 {
		add(Errorf("dns.cache.maxEntries", c.MaxEntries, "must not be negative"))
	}
	duration("dns.cache.minTTL", c.MinTTL, &srv.Cache.MinTTL)
	duration("dns.cache.maxTTL", c.MaxTTL, &srv.Cache.MaxTTL)
	duration("dns.cache.negativeTTL", c.NegativeTTL, &srv.Cache.NegativeTTL)
	duration("dns.cache.staleAnswerTimeout", c.StaleAnswerTimeout, &srv.Cache.StaleAnswerTimeout)
	if s.CookieSecret != "" {
		b, err := base64.StdEncoding.DecodeString(s.CookieSecret)
		if err != nil || len(b) < 16 {
			add(Errorf("dns.cookieSecret", nil, "want at least 16 bytes in base64"))
		}
		srv.CookieSecret = b
	}
	if c.Stale == "off" {
		srv.Cache.StaleFor = -1
	} else {
		duration("dns.cache.stale", c.Stale, &srv.Cache.StaleFor)
	}

	if r := s.RateLimit; r != nil && !r.Off {
		if r.PerSecond <= 0 {
			add(Errorf("dns.rateLimit.perSecond", r.PerSecond, "must be positive"))
		}
		if r.IPv4Prefix < 0 || r.IPv4Prefix > 32 {
			add(Errorf("dns.rateLimit.ipv4Prefix", r.IPv4Prefix, "want 0 to 32"))
		}
		if r.IPv6Prefix < 0 || r.IPv6Prefix > 128 {
			add(Errorf("dns.rateLimit.ipv6Prefix", r.IPv6Prefix, "want 0 to 128"))
		}
		if r.Burst < 0 {
			add(Errorf("dns.rateLimit.burst", r.Burst, "must not be negative"))
		}
		srv.RateLimit = &dnssplit.RateLimit{PerSecond: r.PerSecond, Burst: r.Burst, Slip: r.Slip,
			IPv4Prefix: r.IPv4Prefix, IPv6Prefix: r.IPv6Prefix, Exempt: prefixes("dns.rateLimit.exempt", r.Exempt, add)}
	}

	if x := s.Transfer; x != nil {
		t := &dnssplit.Transfer{Allow: prefixes("dns.transfer.allow", x.Allow, add), TSIG: map[string]string{}, NotifyKey: x.NotifyKey}
		for k, v := range x.TSIG {
			if _, ok := dns.IsDomainName(k); !ok || k == "" {
				add(Errorf("dns.transfer.tsig."+k, k, "key name is not a domain name"))
			}
			if _, err := base64.StdEncoding.DecodeString(v); err != nil || v == "" {
				add(Errorf("dns.transfer.tsig."+k, nil, "secret is not base64"))
			}
			t.TSIG[dns.Fqdn(k)] = v
		}
		for i, n := range x.Notify {
			ap, err := parseHostPort(n, 53)
			if err != nil {
				add(Errorf(fmt.Sprintf("dns.transfer.notify[%d]", i), n, "want ip or ip:port: %v", err))
				continue
			}
			t.Notify = append(t.Notify, ap)
		}
		if x.NotifyKey != "" {
			if _, ok := t.TSIG[dns.Fqdn(x.NotifyKey)]; !ok {
				add(Errorf("dns.transfer.notifyKey", x.NotifyKey, "not a key in dns.transfer.tsig"))
			}
		}
		srv.Transfer = t
	}

	var templates []publicTemplate
	names := map[string]bool{}
	for i, v := range s.Views {
		p := fmt.Sprintf("dns.views[%d]", i)
		if v.Name == "" {
			add(Errorf(p+".name", nil, "every view needs a name"))
		} else if names[v.Name] {
			add(Errorf(p+".name", v.Name, "duplicate view name"))
		}
		names[v.Name] = true
		view := &dnssplit.View{Name: v.Name, Recursion: v.Recursion, Records: new(dnssplit.Records),
			Networks:   prefixes(p+".networks", v.Networks, add),
			LocalAddrs: prefixes(p+".localAddrs", v.LocalAddrs, add)}
		if len(v.Networks) == 0 && i != len(s.Views)-1 {
			add(Errorf(p+".networks", nil, "only the last (default) view may have no networks"))
		}
		if len(v.Networks) == 0 && v.Recursion {
			// Clients that reach a view by default never recurse.
			add(Errorf(p+".recursion", true, "recursion needs networks: list who may recurse (\"0.0.0.0/0\" would be an open resolver)"))
		}
		for j, z := range v.Zones {
			if _, ok := dns.IsDomainName(z); !ok || z == "" {
				add(Errorf(fmt.Sprintf("%s.zones[%d]", p, j), z, "not a domain name"))
				continue
			}
			view.Records.AddZone(z)
		}
		var tmpl []string
		for j, r := range v.Records {
			rp := fmt.Sprintf("%s.records[%d]", p, j)
			if strings.Contains(r, PublicPlaceholder) {
				// Check the syntax with a stand-in address of the right family.
				stand := "192.0.2.1"
				if strings.Contains(strings.ToUpper(r), "AAAA") {
					stand = "2001:db8::1"
				}
				if _, err := dnssplit.ParseRecord(strings.ReplaceAll(r, PublicPlaceholder, stand)); err != nil {
					add(Errorf(rp, r, "%v", unwrapRecordErr(err)))
				}
				tmpl = append(tmpl, r)
				continue
			}
			rr, err := dnssplit.ParseRecord(r)
			if err == nil {
				err = view.Records.Add(rr)
			}
			if err != nil {
				add(Errorf(rp, r, "%v", unwrapRecordErr(err)))
			}
		}
		if len(tmpl) > 0 {
			templates = append(templates, publicTemplate{recs: view.Records, lines: tmpl, path: p})
		}
		for j, zf := range v.ZoneFiles {
			zp := fmt.Sprintf("%s.zoneFiles[%d]", p, j)
			if _, ok := dns.IsDomainName(zf.Origin); !ok || zf.Origin == "" {
				add(Errorf(zp+".origin", zf.Origin, "not a domain name"))
				continue
			}
			if zf.Path == "" {
				add(Errorf(zp+".path", nil, "missing"))
				continue
			}
			if !readFiles {
				continue
			}
			f, err := os.Open(zf.Path)
			if err != nil {
				add(Errorf(zp+".path", zf.Path, "%v", err))
				continue
			}
			err = view.Records.LoadZone(f, zf.Origin, zf.Path)
			f.Close()
			if err != nil {
				add(Errorf(zp+".path", zf.Path, "%v", err))
			}
		}
		for j, t := range v.SplitTypes {
			typ, ok := dns.StringToType[strings.ToUpper(t)]
			if !ok {
				add(Errorf(fmt.Sprintf("%s.splitTypes[%d]", p, j), t, "unknown record type"))
				continue
			}
			view.SplitTypes = append(view.SplitTypes, typ)
		}
		srv.Views = append(srv.Views, view)
	}
	if s.RateLimit == nil {
		rl := &dnssplit.RateLimit{PerSecond: defaultRRLPerSecond, Burst: defaultRRLBurst}
		for _, v := range srv.Views {
			if v.Recursion {
				rl.Exempt = append(rl.Exempt, v.Networks...)
			}
		}
		srv.RateLimit = rl
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return srv, publicSetter(templates), nil
}

// unwrapRecordErr drops the "dnssplit: record %q:" wrapping: the field error
// already shows the value.
func unwrapRecordErr(err error) error {
	if inner := errors.Unwrap(err); inner != nil {
		return inner
	}
	return err
}

// publicSetter returns the function that (re)writes the records holding {public}.
func publicSetter(templates []publicTemplate) func(netip.Addr) error {
	var mu sync.Mutex
	return func(a netip.Addr) error {
		mu.Lock()
		defer mu.Unlock()
		a = a.Unmap()
		var errs []error
		for _, t := range templates {
			type key struct {
				name string
				typ  uint16
			}
			sets := map[key][]dns.RR{}
			for _, line := range t.lines {
				rr, err := dnssplit.ParseRecord(strings.ReplaceAll(line, PublicPlaceholder, a.String()))
				if err != nil {
					// An A record cannot hold an IPv6 public address and
					// vice versa: such a template waits for its family.
					if isAddrType(line) {
						continue
					}
					errs = append(errs, fmt.Errorf("config: %s: %w", t.path, err))
					continue
				}
				k := key{dns.CanonicalName(rr.Header().Name), rr.Header().Rrtype}
				sets[k] = append(sets[k], rr)
			}
			for k, rrs := range sets {
				if err := t.recs.Set(k.name, k.typ, rrs...); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	}
}

func isAddrType(line string) bool {
	for _, f := range strings.Fields(strings.ToUpper(line)) {
		if f == "A" || f == "AAAA" {
			return true
		}
	}
	return false
}

func prefixes(path string, in []string, add func(error)) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				add(Errorf(fmt.Sprintf("%s[%d]", path, i), s, "bad prefix: %v", err))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

func parseHostPort(s string, defPort uint16) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, errors.New("not an ip or ip:port")
	}
	return netip.AddrPortFrom(a, defPort), nil
}

func parseUpstream(s string) (dnssplit.Upstream, error) {
	var up dnssplit.Upstream
	rest, tls := strings.CutPrefix(s, "tls://")
	port := uint16(53)
	if tls {
		port = 853
		up.TLS = true
		if h, name, ok := strings.Cut(rest, "#"); ok {
			rest, up.ServerName = h, name
		}
	}
	ap, err := parseHostPort(rest, port)
	if err != nil {
		return up, fmt.Errorf(`want "ip:port" or "tls://ip:port#name": %v`, err)
	}
	up.Addr = ap
	return up, nil
}
