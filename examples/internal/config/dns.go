package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"
)

// PublicPlaceholder in a DNS record is replaced by the public address the
// gateway learns (and relearns) by probing the NAT.
const PublicPlaceholder = "{public}"

// EdgePlaceholder in a DNS record (A or AAAA) stands for the addresses of
// the edges in the tunnel: section: the record is repeated once per edge
// address of its family, so that the outside view sends internet clients of
// a tunnelled name to the edges (a home line without inbound ports has no
// {public} address that would work).
const EdgePlaceholder = "{edge}"

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
//
// Behind a CGN, with a tunnel: section, the outside view names the edges
// instead: "blog.example.com. 300 IN A {edge}" becomes one A record per
// IPv4 address of tunnel.edges (and AAAA {edge} one per IPv6 address).
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
	// MaxTCPConnsPerNetwork bounds the TCP connections of one client
	// network (/24, /56) per listener (0: 32; -1: no bound).
	MaxTCPConnsPerNetwork int    `yaml:"maxTCPConnsPerNetwork"`
	TCPIdleTimeout        string `yaml:"tcpIdleTimeout"`
	// ForwardDoHCanary forwards use-application-dns.net like any other
	// name; by default recursive views answer it NXDOMAIN, so that Firefox
	// keeps using this server (and its LAN answers) instead of turning on
	// DNS over HTTPS to a public resolver.
	ForwardDoHCanary bool `yaml:"forwardDoHCanary"`
	// CookieSecret keys DNS cookies (base64); servers sharing an address
	// should share it. Empty: random at start.
	CookieSecret string `yaml:"cookieSecret"`

	root *yaml.Node // the document, for the lines of Build's errors
	// edges are the IP addresses of tunnel.edges, for {edge}.
	edges []netip.Addr
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
// Without a rateLimit key dnssplit's default limit applies (closed by
// default: an answering server on a public address must not be an
// amplifier): 50 responses per second per /24 (/56), burst 100, with the
// networks of views that allow recursion (the LAN) exempt. With the key, its
// values replace the default (zero keeps each one's default; recursive views
// are then exempt only if listed in exempt). `rateLimit: {off: true}`
// removes the limit.
type DNSRate struct {
	// Off removes the limit.
	Off        bool    `yaml:"off"`
	PerSecond  float64 `yaml:"perSecond"`
	Burst      int     `yaml:"burst"`
	Slip       int     `yaml:"slip"`
	IPv4Prefix int     `yaml:"ipv4Prefix"`
	IPv6Prefix int     `yaml:"ipv6Prefix"`
	// MaxPrefixes bounds the prefixes tracked at once (default 100000).
	MaxPrefixes int      `yaml:"maxPrefixes"`
	Exempt      []string `yaml:"exempt"`
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
// call). It reads the zone files. Listening on s.Listen is the caller's job.
func (s *DNS) Build(logger *slog.Logger) (*dnssplit.Server, func(netip.Addr) error, error) {
	srv, set, err := s.build(logger, true)
	return srv, set, withLines(err, s.root)
}

// publicTemplate is the records of one view that hold {public}.
type publicTemplate struct {
	recs  *dnssplit.Records
	lines []publicLine
	path  string
}

// publicLine is one record line with {public}, and the type it has: an A
// record takes an IPv4 public address, an AAAA record an IPv6 one, any other
// type (TXT, say) either.
type publicLine struct {
	line string
	typ  uint16
}

// standIns are the addresses {public} is replaced with to learn a record's
// type at parse time: one per family.
var standIns = [...]string{"192.0.2.1", "2001:db8::1"}

// parsePublicLine finds the type of a record line holding {public} by
// parsing it with a stand-in address of each family: the record's type, not
// the words on the line, decides ("aaaa.example.com. IN A {public}" is an A record).
func parsePublicLine(r string) (publicLine, error) {
	var firstErr error
	for _, stand := range standIns {
		rr, err := dnssplit.ParseRecord(strings.ReplaceAll(r, PublicPlaceholder, stand))
		if err == nil {
			return publicLine{line: r, typ: rr.Header().Rrtype}, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return publicLine{}, firstErr
}

func (s *DNS) build(logger *slog.Logger, readFiles bool) (*dnssplit.Server, func(netip.Addr) error, error) {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	srv := &dnssplit.Server{Logger: logger, UDPSize: s.UDPSize, Workers: s.Workers, MaxTCPConns: s.MaxTCPConns,
		MaxTCPConnsPerNetwork: s.MaxTCPConnsPerNetwork, ForwardDoHCanary: s.ForwardDoHCanary}

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
	srv.UpstreamTimeout = duration("dns.upstreamTimeout", s.UpstreamTimeout, false, add)
	srv.TCPIdleTimeout = duration("dns.tcpIdleTimeout", s.TCPIdleTimeout, false, add)
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

	if s.MaxTCPConnsPerNetwork < -1 {
		add(Errorf("dns.maxTCPConnsPerNetwork", s.MaxTCPConnsPerNetwork, "want a positive number, 0 for the default or -1 for no limit"))
	}

	c := s.Cache
	srv.Cache = dnssplit.CacheConfig{Disabled: c.Disabled, MaxEntries: c.MaxEntries, HoldNXDOMAIN: c.HoldNXDOMAIN,
		Prefetch: c.Prefetch, PersistPath: c.Persist}
	if c.MaxEntries < 0 {
		add(Errorf("dns.cache.maxEntries", c.MaxEntries, "must not be negative"))
	}
	srv.Cache.MinTTL = duration("dns.cache.minTTL", c.MinTTL, false, add)
	srv.Cache.MaxTTL = duration("dns.cache.maxTTL", c.MaxTTL, false, add)
	srv.Cache.NegativeTTL = duration("dns.cache.negativeTTL", c.NegativeTTL, false, add)
	srv.Cache.StaleAnswerTimeout = duration("dns.cache.staleAnswerTimeout", c.StaleAnswerTimeout, false, add)
	srv.Cache.StaleFor = duration("dns.cache.stale", c.Stale, true, add)
	if s.CookieSecret != "" {
		b, err := base64.StdEncoding.DecodeString(s.CookieSecret)
		if err != nil || len(b) < 16 {
			add(Errorf("dns.cookieSecret", nil, "want at least 16 bytes in base64"))
		}
		srv.CookieSecret = b
	}

	if r := s.RateLimit; r != nil && r.Off {
		srv.RateLimit = &dnssplit.RateLimit{Disabled: true}
	} else if r != nil {
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
		if r.MaxPrefixes < 0 {
			add(Errorf("dns.rateLimit.maxPrefixes", r.MaxPrefixes, "must not be negative"))
		}
		srv.RateLimit = &dnssplit.RateLimit{PerSecond: r.PerSecond, Burst: r.Burst, Slip: r.Slip,
			IPv4Prefix: r.IPv4Prefix, IPv6Prefix: r.IPv6Prefix, MaxPrefixes: r.MaxPrefixes,
			Exempt: prefixes("dns.rateLimit.exempt", r.Exempt, add)}
	}

	if x := s.Transfer; x != nil {
		t := &dnssplit.Transfer{Allow: prefixes("dns.transfer.allow", x.Allow, add), TSIG: map[string]string{}, NotifyKey: x.NotifyKey}
		keys := make([]string, 0, len(x.TSIG))
		for k := range x.TSIG {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := x.TSIG[k]
			if _, ok := dns.IsDomainName(k); !ok || k == "" {
				add(Errorf("dns.transfer.tsig."+k, k, "key name is not a domain name"))
			}
			if b, err := base64.StdEncoding.DecodeString(v); err != nil || len(b) == 0 {
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
		var tmpl []publicLine
		for j, r := range v.Records {
			rp := fmt.Sprintf("%s.records[%d]", p, j)
			if strings.Contains(r, EdgePlaceholder) {
				for _, rr := range s.edgeRecords(rp, r, add) {
					if err := view.Records.Add(rr); err != nil {
						add(Errorf(rp, r, "%v", unwrapRecordErr(err)))
					}
				}
				continue
			}
			if strings.Contains(r, PublicPlaceholder) {
				pl, err := parsePublicLine(r)
				if err != nil {
					add(Errorf(rp, r, "%v", unwrapRecordErr(err)))
					continue
				}
				tmpl = append(tmpl, pl)
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
	if err := join(errs...); err != nil {
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
			for _, pl := range t.lines {
				// An A record cannot hold an IPv6 public address and vice
				// versa: such a record waits for an address of its family.
				if pl.typ == dns.TypeA && !a.Is4() || pl.typ == dns.TypeAAAA && !a.Is6() {
					continue
				}
				rr, err := dnssplit.ParseRecord(strings.ReplaceAll(pl.line, PublicPlaceholder, a.String()))
				if err != nil {
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
		return join(errs...)
	}
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

// edgeRecords expands a record line holding {edge} into one record per edge
// address of the record's family.
func (s *DNS) edgeRecords(path, line string, add func(error)) []dns.RR {
	pl, err := parsePublicLine(strings.ReplaceAll(line, EdgePlaceholder, PublicPlaceholder))
	if err != nil {
		add(Errorf(path, line, "%v", unwrapRecordErr(err)))
		return nil
	}
	if pl.typ != dns.TypeA && pl.typ != dns.TypeAAAA {
		add(Errorf(path, line, "%s stands for an address: only A and AAAA records may hold it", EdgePlaceholder))
		return nil
	}
	var out []dns.RR
	for _, a := range s.edges {
		if a.Is4() != (pl.typ == dns.TypeA) {
			continue
		}
		rr, err := dnssplit.ParseRecord(strings.ReplaceAll(line, EdgePlaceholder, a.String()))
		if err != nil {
			add(Errorf(path, line, "%v", unwrapRecordErr(err)))
			return nil
		}
		out = append(out, rr)
	}
	if len(out) == 0 {
		family := "IPv4"
		if pl.typ == dns.TypeAAAA {
			family = "IPv6"
		}
		add(Errorf(path, line, "%s needs tunnel.edges with an %s address (the host of an edge's addr)", EdgePlaceholder, family))
	}
	return out
}
