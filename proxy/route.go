package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/hairpin-go/hairpin/internal/netcore"
	"golang.org/x/net/idna"
)

// Protocol is what a client speaks on a proxied connection, and what a
// [Route] matches.
type Protocol int

// Protocols.
const (
	ProtocolUnknown Protocol = iota
	ProtocolTLS              // routed by the ClientHello's SNI, passed through untouched
	ProtocolHTTP             // plain HTTP/1, routed by each request's Host
)

// String returns "tls", "http" or "unknown".
func (p Protocol) String() string {
	switch p {
	case ProtocolTLS:
		return "tls"
	case ProtocolHTTP:
		return "http"
	}
	return "unknown"
}

// Hello is what the proxy learned from the first bytes of a connection: the
// input of route matching.
type Hello struct {
	Protocol Protocol
	// ServerName is the TLS SNI (the outer, public name under ECH) or the HTTP
	// Host without port, lower case, as an A-label (punycode), without a
	// trailing dot. Empty if the client sent none.
	ServerName string
	// ALPN lists the protocols offered in the ClientHello (TLS only).
	ALPN []string
	// Source is the client address: the connection's remote address, or the
	// one a trusted inbound PROXY header carried.
	Source netip.AddrPort
	// Dest is the address the client connected to (likewise).
	Dest netip.AddrPort
}

// Route sends connections whose [Hello] matches to a [Target].
//
// A route matches when its Protocol equals the hello's, its Host matches the
// server name, any ALPN protocol it lists was offered, and Match (if set)
// returns true. Among matching routes the most specific host wins: an exact
// name, then the longest wildcard suffix, then the default route (Host ""). At
// equal host, routes with ALPN win over routes without, then routes added
// earlier.
//
// Allow is checked on the winner. A denied client may still fall to another
// route with the same Host (say a LAN-only route and a public one), never to a
// less specific host: a denial is logged and the connection closed.
type Route struct {
	// Protocol is ProtocolTLS (SNI) or ProtocolHTTP (Host). Required.
	Protocol Protocol
	// Host is an exact name ("blog.example.com"), a wildcard ("*.example.com",
	// matching names at any depth below example.com but not example.com
	// itself), or "" for the default route. Case-insensitive; Unicode names are
	// converted to punycode; a trailing dot is ignored.
	Host string
	// ALPN optionally restricts the route to hellos offering one of these
	// protocols (for example "acme-tls/1"). TLS only.
	ALPN []string
	// Allow optionally lists the source networks allowed to use the route; if
	// empty, every source is allowed.
	Allow []netip.Prefix
	// Match optionally adds a predicate, called only when everything else
	// matched. It must not block.
	Match func(*Hello) bool
	// MaxConnsPerSource optionally bounds the connections one client
	// address may have open on this route, below [Proxy.MaxConnsPerSource]
	// (which counts all routes); if zero or negative, only the proxy's
	// limit applies. The count starts afresh when the routes are replaced.
	MaxConnsPerSource int
	// Target receives the connection. Required.
	Target Target
}

// route is the validated, normalized form of a Route.
type route struct {
	Route
	pattern  string // normalized Host: "name", ".suffix" for wildcards, "" default
	allow    []netip.Prefix
	bySource *netcore.ConnCounter // nil without a per-route cap
	index    int                  // its place in the routes given
}

func (r *route) allowed(src netip.Addr) bool {
	if len(r.allow) == 0 {
		return true
	}
	src = src.Unmap()
	for _, p := range r.allow {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (r *route) alpnOK(offered []string) bool {
	if len(r.ALPN) == 0 {
		return true
	}
	for _, a := range r.ALPN {
		if slices.Contains(offered, a) {
			return true
		}
	}
	return false
}

// protoTable indexes the routes of one protocol.
type protoTable struct {
	exact map[string][]*route // by name
	wild  map[string][]*route // by suffix with leading dot
	def   []*route
}

// table is an immutable, validated route table. A new one is built for every
// change and swapped in atomically.
type table struct {
	routes []Route // as given, for Proxy.Routes
	protos [3]protoTable
}

// newTable validates routes and builds a table. All errors are returned joined.
func newTable(routes []Route) (*table, error) {
	t := &table{routes: slices.Clone(routes)}
	for i := range t.protos {
		t.protos[i] = protoTable{exact: map[string][]*route{}, wild: map[string][]*route{}}
	}
	var errs []error
	for i, r := range routes {
		nr, err := compileRoute(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy: route %d (%q): %w", i, r.Host, err))
			continue
		}
		pt := &t.protos[r.Protocol]
		var same []*route
		switch {
		case nr.pattern == "":
			same = pt.def
		case nr.pattern[0] == '.':
			same = pt.wild[nr.pattern]
		default:
			same = pt.exact[nr.pattern]
		}
		if j := slices.IndexFunc(same, func(o *route) bool { return o.shadows(nr) }); j >= 0 {
			// The second would never be chosen: a dead route is a mistake.
			errs = append(errs, fmt.Errorf("proxy: route %d (%q): duplicate of route %d (%q): which takes every connection it would",
				i, r.Host, same[j].index, same[j].Host))
			continue
		}
		nr.index = i
		switch {
		case nr.pattern == "":
			pt.def = append(pt.def, nr)
		case nr.pattern[0] == '.':
			pt.wild[nr.pattern] = append(pt.wild[nr.pattern], nr)
		default:
			pt.exact[nr.pattern] = append(pt.exact[nr.pattern], nr)
		}
	}
	if len(errs) > 0 {
		return nil, netcore.Join(errs...)
	}
	// ALPN-specific routes first; stable keeps insertion order otherwise.
	byALPN := func(a, b *route) int {
		return boolInt(len(b.ALPN) > 0) - boolInt(len(a.ALPN) > 0)
	}
	for i := range t.protos {
		pt := &t.protos[i]
		for _, l := range pt.exact {
			slices.SortStableFunc(l, byALPN)
		}
		for _, l := range pt.wild {
			slices.SortStableFunc(l, byALPN)
		}
		slices.SortStableFunc(pt.def, byALPN)
	}
	return t, nil
}

// shadows reports whether r, earlier in the routes for the same name and
// protocol, takes every connection later would: r has no source list and
// no predicate, and later's ALPN protocols are all r's (or neither has
// any). Such a later route is dead.
func (r *route) shadows(later *route) bool {
	if len(r.allow) > 0 || r.Match != nil {
		return false
	}
	if len(later.ALPN) == 0 {
		return len(r.ALPN) == 0
	}
	return len(r.ALPN) > 0 && !slices.ContainsFunc(later.ALPN, func(p string) bool { return !slices.Contains(r.ALPN, p) })
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func compileRoute(r Route) (*route, error) {
	var errs []error
	if r.Protocol != ProtocolTLS && r.Protocol != ProtocolHTTP {
		errs = append(errs, fmt.Errorf("protocol %v: want tls or http", r.Protocol))
	}
	if r.Target == nil {
		errs = append(errs, errors.New("no target"))
	}
	if r.Protocol == ProtocolHTTP && len(r.ALPN) > 0 {
		errs = append(errs, errors.New("ALPN on an HTTP route"))
	}
	pattern, err := normalizePattern(r.Host)
	if err != nil {
		errs = append(errs, err)
	}
	nr := &route{Route: r, pattern: pattern}
	if r.MaxConnsPerSource > 0 {
		nr.bySource = &netcore.ConnCounter{PerAddr: r.MaxConnsPerSource}
	}
	nr.ALPN = slices.Clone(r.ALPN)
	for _, p := range r.Allow {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("invalid allow prefix %v", p))
			continue
		}
		// Unmap so that "::ffff:10.0.0.0/104" and "10.0.0.0/8" behave alike.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		nr.allow = append(nr.allow, p.Masked())
	}
	return nr, netcore.Join(errs...)
}

// normalizePattern turns a route Host into its matching key.
func normalizePattern(host string) (string, error) {
	if host == "" || host == "*" {
		return "", nil
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		n, err := NormalizeName(rest)
		if err != nil {
			return "", err
		}
		if n == "" {
			return "", fmt.Errorf("bad wildcard %q", host)
		}
		return "." + n, nil
	}
	if strings.Contains(host, "*") {
		return "", fmt.Errorf("bad host %q: a wildcard must be the whole first label", host)
	}
	n, err := NormalizeName(host)
	if err != nil {
		return "", err
	}
	return n, nil
}

// maxNameLen is the longest DNS name in presentation form (RFC 1035).
const maxNameLen = 253

// NormalizeName returns name in the form routes are matched in: lower case,
// Unicode labels converted to punycode A-labels, a trailing dot removed. It
// fails on names that cannot be DNS host names.
func NormalizeName(name string) (string, error) {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return "", nil
	}
	ascii := true
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if !ascii {
		n, err := idna.Lookup.ToASCII(name)
		if err != nil {
			return "", fmt.Errorf("bad name %q: %w", name, err)
		}
		name = n
	}
	name = strings.ToLower(name)
	if len(name) > maxNameLen {
		return "", fmt.Errorf("name too long (%d bytes)", len(name))
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("bad name %q: empty or over-long label", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			// Underscore is not a host name character but appears in real
			// service names; allow it as HAProxy and nginx do.
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("bad name %q: character %q", name, c)
			}
		}
	}
	return name, nil
}

// match picks the route for h. It is a pure function of the table and h.
func (t *table) match(h *Hello) (*route, Reason) {
	if t == nil || h.Protocol <= ProtocolUnknown || int(h.Protocol) >= len(t.protos) {
		return nil, ReasonNoRoute
	}
	pt := &t.protos[h.Protocol]
	denied := false
	try := func(l []*route) *route {
		for _, r := range l {
			if !r.alpnOK(h.ALPN) || (r.Match != nil && !r.Match(h)) {
				continue
			}
			if !r.allowed(h.Source.Addr()) {
				denied = true
				continue
			}
			return r
		}
		return nil
	}
	if name := h.ServerName; name != "" {
		if l, ok := pt.exact[name]; ok {
			if r := try(l); r != nil {
				return r, ReasonUnknown
			}
		}
		for i := 0; i < len(name) && !denied; i++ {
			if name[i] != '.' {
				continue
			}
			if l, ok := pt.wild[name[i:]]; ok {
				if r := try(l); r != nil {
					return r, ReasonUnknown
				}
			}
		}
	}
	if denied {
		return nil, ReasonDenied
	}
	if r := try(pt.def); r != nil {
		return r, ReasonUnknown
	}
	switch {
	case denied:
		return nil, ReasonDenied
	case h.ServerName == "" && h.Protocol == ProtocolTLS:
		return nil, ReasonNoSNI
	case h.ServerName == "" && h.Protocol == ProtocolHTTP:
		return nil, ReasonNoHost
	}
	return nil, ReasonNoRoute
}

// CheckHost reports whether host is a valid route Host: an exact name, a
// "*.suffix" wildcard, or "" for the default route.
func CheckHost(host string) error {
	_, err := normalizePattern(host)
	return err
}
