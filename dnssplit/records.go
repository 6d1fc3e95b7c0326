package dnssplit

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// defaultTTL is the TTL given to zone-file lines that name none: five minutes,
// short enough that a changed public address reaches clients quickly.
const defaultTTL = 300

// Records is the local data of a view: resource records in zone-file syntax,
// whole zone files and records set at run time. The zero value is empty and
// ready to use. Records is safe for concurrent use; lookups never see a
// half-applied update of an RRset.
//
// Names inside a declared zone (AddZone, a SOA record or a zone file) are
// answered authoritatively, including NXDOMAIN and NODATA with the zone's SOA.
// A record outside every declared zone makes only its own owner name (and, for
// a wildcard, the names it covers) local.
type Records struct {
	mu    sync.RWMutex
	names map[string]map[uint16][]dns.RR // lower-case owner → type → RRset
	zones map[string]*zoneState          // lower-case apex → state
	wild  int                            // wildcard owner names: none means no wildcard walk
	below map[string]int                 // name → owner names strictly below it (empty non-terminals)
	watch []func(zone string)
}

type zoneState struct {
	soa      *dns.SOA // nil until set; synthesized on demand
	explicit bool     // SOA came from the data
}

// Answer is the result of a local lookup.
type Answer struct {
	// Local reports whether the name belongs to the local data at all. When
	// false the query must be forwarded or refused.
	Local bool
	// Rcode is dns.RcodeSuccess or dns.RcodeNameError.
	Rcode int
	// Zone is the apex of the zone holding the name, or "" for a stand-alone record.
	Zone   string
	Answer []dns.RR
	Ns     []dns.RR
}

// ParseRecord parses one line of zone-file syntax. Relative names are taken
// relative to the root; a missing TTL becomes five minutes.
func ParseRecord(line string) (dns.RR, error) {
	zp := dns.NewZoneParser(strings.NewReader(line), ".", "")
	zp.SetDefaultTTL(defaultTTL)
	rr, ok := zp.Next()
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("dnssplit: record %q: %w", line, err)
	}
	if !ok || rr == nil {
		return nil, fmt.Errorf("dnssplit: record %q: no record", line)
	}
	if _, more := zp.Next(); more {
		return nil, fmt.Errorf("dnssplit: record %q: more than one record", line)
	}
	return rr, nil
}

// AddString parses each line as a record in zone-file syntax and adds it.
func (r *Records) AddString(lines ...string) error {
	rrs := make([]dns.RR, 0, len(lines))
	var errs []error
	for _, l := range lines {
		rr, err := ParseRecord(l)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rrs = append(rrs, rr)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return r.Add(rrs...)
}

// LoadZone reads a whole zone file with dns.ZoneParser and adds its records.
// origin is the zone's apex ($ORIGIN); file names the source in errors. The
// zone is declared even if the file has no SOA (one is synthesized).
func (r *Records) LoadZone(rd io.Reader, origin, file string) error {
	origin = dns.CanonicalName(origin)
	zp := dns.NewZoneParser(rd, origin, file)
	zp.SetDefaultTTL(defaultTTL)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("dnssplit: zone %s: %w", origin, err)
	}
	r.AddZone(origin)
	return r.Add(rrs...)
}

// AddZone declares apex as a zone answered authoritatively: names under it
// that have no records get NXDOMAIN, types they lack get NODATA, both with
// the zone's SOA (a synthesized one unless a SOA record is added).
func (r *Records) AddZone(apex string) {
	apex = dns.CanonicalName(apex)
	r.mu.Lock()
	r.init()
	if r.zones[apex] == nil {
		r.zones[apex] = &zoneState{soa: synthSOA(apex)}
	}
	r.mu.Unlock()
}

// countNode records that owner name was added (d = 1) or removed (d = -1):
// the wildcard count, and the descendant count of each of its ancestors, so
// that telling NXDOMAIN from an empty non-terminal is one map lookup.
func (r *Records) countNode(name string, d int) {
	if strings.HasPrefix(name, "*.") {
		r.wild += d
	}
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		a := name[off:]
		if r.below[a] += d; r.below[a] <= 0 {
			delete(r.below, a)
		}
	}
	if name != "." {
		if r.below["."] += d; r.below["."] <= 0 {
			delete(r.below, ".")
		}
	}
}

func (r *Records) init() {
	if r.names == nil {
		r.names = make(map[string]map[uint16][]dns.RR)
		r.zones = make(map[string]*zoneState)
		r.below = make(map[string]int)
	}
}

// Add adds records to their RRsets. A SOA record declares its owner as a zone.
func (r *Records) Add(rrs ...dns.RR) error {
	for _, rr := range rrs {
		if rr == nil {
			return errors.New("dnssplit: nil record")
		}
		switch rr.Header().Rrtype {
		case dns.TypeOPT, dns.TypeTSIG, dns.TypeIXFR, dns.TypeAXFR, dns.TypeANY:
			return fmt.Errorf("dnssplit: record type %s cannot be local data", dns.TypeToString[rr.Header().Rrtype])
		}
	}
	changed := map[string]bool{}
	soaGiven := map[string]bool{}
	r.mu.Lock()
	r.init()
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		h := rr.Header()
		h.Name = dns.CanonicalName(h.Name)
		if h.Class == 0 {
			h.Class = dns.ClassINET
		}
		types := r.names[h.Name]
		if types == nil {
			types = make(map[uint16][]dns.RR)
			r.names[h.Name] = types
			r.countNode(h.Name, 1)
		}
		if soa, ok := rr.(*dns.SOA); ok {
			z := r.zones[h.Name]
			if z == nil {
				z = &zoneState{}
				r.zones[h.Name] = z
			}
			z.soa, z.explicit = soa, true
			types[dns.TypeSOA] = []dns.RR{soa}
			changed[h.Name] = true
			soaGiven[h.Name] = true // the data brings its own serial
			continue
		}
		if !containsRR(types[h.Rrtype], rr) {
			types[h.Rrtype] = append(types[h.Rrtype], rr)
		}
		changed[r.zoneOfLocked(h.Name)] = true
	}
	bump := map[string]bool{}
	for z := range changed {
		if !soaGiven[z] {
			bump[z] = true
		}
	}
	fns := r.bumpLocked(bump)
	r.mu.Unlock()
	for z := range soaGiven {
		bump[z] = true // notify, without touching the given serial
	}
	notifyAll(fns, bump)
	return nil
}

func containsRR(set []dns.RR, rr dns.RR) bool {
	for _, x := range set {
		if dns.IsDuplicate(x, rr) {
			return true
		}
	}
	return false
}

// Set replaces the RRset of name and type with rrs (which must all have that
// name and type); no rrs removes the RRset. It is the call for data learned at
// run time, such as a public address found by a NAT probe.
func (r *Records) Set(name string, rrtype uint16, rrs ...dns.RR) error {
	name = dns.CanonicalName(name)
	set := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		h := rr.Header()
		if dns.CanonicalName(h.Name) != name || h.Rrtype != rrtype {
			return fmt.Errorf("dnssplit: set %s %s: record %q does not match", name, dns.TypeToString[rrtype], rr.String())
		}
		rr = dns.Copy(rr)
		rr.Header().Name = name
		if rr.Header().Class == 0 {
			rr.Header().Class = dns.ClassINET
		}
		set = append(set, rr)
	}
	r.mu.Lock()
	r.init()
	types := r.names[name]
	if len(set) == 0 {
		if types != nil {
			delete(types, rrtype)
			if len(types) == 0 {
				delete(r.names, name)
				r.countNode(name, -1)
			}
		}
	} else {
		if types == nil {
			types = make(map[uint16][]dns.RR)
			r.names[name] = types
			r.countNode(name, 1)
		}
		types[rrtype] = set
	}
	changed := map[string]bool{r.zoneOfLocked(name): true}
	fns := r.bumpLocked(changed)
	r.mu.Unlock()
	notifyAll(fns, changed)
	return nil
}

// Remove removes every RRset of name.
func (r *Records) Remove(name string) {
	name = dns.CanonicalName(name)
	r.mu.Lock()
	r.init()
	if _, ok := r.names[name]; ok {
		delete(r.names, name)
		r.countNode(name, -1)
	}
	changed := map[string]bool{r.zoneOfLocked(name): true}
	fns := r.bumpLocked(changed)
	r.mu.Unlock()
	notifyAll(fns, changed)
}

// onChange registers fn to be called (outside the lock) with the apex of a
// zone whose data changed.
func (r *Records) onChange(fn func(zone string)) {
	r.mu.Lock()
	r.watch = append(r.watch, fn)
	r.mu.Unlock()
}

// bumpLocked increments the serial of each changed declared zone and returns
// the watchers to call.
func (r *Records) bumpLocked(changed map[string]bool) []func(string) {
	for apex := range changed {
		z := r.zones[apex]
		if z == nil {
			delete(changed, apex)
			continue
		}
		if z.soa == nil {
			z.soa = synthSOA(apex)
		}
		soa := dns.Copy(z.soa).(*dns.SOA)
		soa.Serial++
		z.soa = soa
		if z.explicit {
			r.names[apex][dns.TypeSOA] = []dns.RR{soa}
		}
	}
	return append([]func(string){}, r.watch...)
}

func notifyAll(fns []func(string), changed map[string]bool) {
	for apex := range changed {
		for _, fn := range fns {
			fn(apex)
		}
	}
}

// synthSOA makes the SOA of a zone declared without one. Its negative TTL of
// 60 s keeps NXDOMAIN for names added later at run time short-lived.
func synthSOA(apex string) *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns:      "ns." + strings.TrimPrefix(apex, "."),
		Mbox:    "hostmaster." + strings.TrimPrefix(apex, "."),
		Serial:  uint32(time.Now().Unix()), // grows across restarts, so secondaries follow
		Refresh: 3600,
		Retry:   600,
		Expire:  604800,
		Minttl:  60,
	}
}

// zoneOfLocked returns the apex of the closest declared zone enclosing name, or "".
func (r *Records) zoneOfLocked(name string) string {
	for n := name; ; {
		if _, ok := r.zones[n]; ok {
			return n
		}
		i, end := dns.NextLabel(n, 0)
		if end {
			return ""
		}
		n = n[i:]
	}
}

// Zones returns the apexes of the declared zones, sorted.
func (r *Records) Zones() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.zones))
	for z := range r.zones {
		out = append(out, z)
	}
	sort.Strings(out)
	return out
}

// SOA returns the SOA of a declared zone (synthesized if the data has none).
func (r *Records) SOA(apex string) (*dns.SOA, bool) {
	apex = dns.CanonicalName(apex)
	r.mu.RLock()
	defer r.mu.RUnlock()
	z, ok := r.zones[apex]
	if !ok {
		return nil, false
	}
	return r.soaLocked(apex, z), true
}

func (r *Records) soaLocked(apex string, z *zoneState) *dns.SOA {
	if z.soa == nil {
		return synthSOA(apex)
	}
	return z.soa
}

// ZoneRecords returns every record of the declared zone apex, SOA first, for
// a zone transfer.
func (r *Records) ZoneRecords(apex string) ([]dns.RR, bool) {
	apex = dns.CanonicalName(apex)
	r.mu.RLock()
	defer r.mu.RUnlock()
	z, ok := r.zones[apex]
	if !ok {
		return nil, false
	}
	out := []dns.RR{r.soaLocked(apex, z)}
	names := make([]string, 0, len(r.names))
	for n := range r.names {
		if dns.IsSubDomain(apex, n) && r.zoneOfLocked(n) == apex {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		types := r.names[n]
		keys := make([]int, 0, len(types))
		for t := range types {
			if t != dns.TypeSOA || n != apex {
				keys = append(keys, int(t))
			}
		}
		sort.Ints(keys)
		for _, t := range keys {
			out = append(out, types[uint16(t)]...)
		}
	}
	return out, true
}

// maxCNAMEChain bounds how many local CNAMEs one answer follows, so a loop in
// the data cannot loop the server.
const maxCNAMEChain = 8

// Lookup answers name and qtype from the local data. A zero-value Answer
// (Local false) means the name is not local.
func (r *Records) Lookup(name string, qtype uint16) Answer {
	name = dns.CanonicalName(name)
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.names == nil {
		return Answer{}
	}
	a := r.lookupLocked(name, qtype)
	if !a.Local || a.Rcode != dns.RcodeSuccess || qtype == dns.TypeCNAME {
		return a
	}
	// Follow local CNAMEs.
	for i := 0; i < maxCNAMEChain && len(a.Answer) > 0; i++ {
		last, ok := a.Answer[len(a.Answer)-1].(*dns.CNAME)
		if !ok {
			break
		}
		next := r.lookupLocked(dns.CanonicalName(last.Target), qtype)
		if !next.Local || next.Rcode != dns.RcodeSuccess || len(next.Answer) == 0 {
			break
		}
		a.Answer = append(a.Answer, next.Answer...)
		a.Ns = nil
	}
	return a
}

func (r *Records) lookupLocked(name string, qtype uint16) Answer {
	apex := r.zoneOfLocked(name)
	if name == apex && (qtype == dns.TypeSOA || qtype == dns.TypeANY) {
		if z := r.zones[apex]; !z.explicit {
			a := Answer{Local: true, Zone: apex, Answer: []dns.RR{r.soaLocked(apex, z)}}
			if qtype == dns.TypeANY {
				a.Answer = append(a.Answer, r.fromNode(name, name, apex, r.names[name], qtype).Answer...)
			}
			return a
		}
	}
	if types, ok := r.names[name]; ok {
		return r.fromNode(name, name, apex, types, qtype)
	}
	// Wildcard: walk up to the closest encloser and try *.<encloser>.
	for n := name; r.wild > 0; {
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
		if apex != "" && !dns.IsSubDomain(apex, n) {
			break
		}
		if types, ok := r.names["*."+n]; ok {
			return r.fromNode(name, "*."+n, apex, types, qtype)
		}
		if _, ok := r.names[n]; ok || n == apex {
			break // closest encloser exists: no wildcard above it applies
		}
	}
	if apex == "" {
		return Answer{}
	}
	soa := r.soaLocked(apex, r.zones[apex])
	if r.hasDescendantLocked(name) {
		return Answer{Local: true, Zone: apex, Ns: []dns.RR{soa}} // empty non-terminal: NODATA
	}
	return Answer{Local: true, Rcode: dns.RcodeNameError, Zone: apex, Ns: []dns.RR{soa}}
}

func (r *Records) hasDescendantLocked(name string) bool {
	return r.below[name] > 0
}

func (r *Records) fromNode(qname, owner, apex string, types map[uint16][]dns.RR, qtype uint16) Answer {
	a := Answer{Local: true, Zone: apex}
	rename := func(set []dns.RR) []dns.RR {
		out := make([]dns.RR, len(set))
		for i, rr := range set {
			if owner != qname {
				rr = dns.Copy(rr)
				rr.Header().Name = qname
			}
			out[i] = rr
		}
		return out
	}
	switch {
	case qtype == dns.TypeANY:
		keys := make([]int, 0, len(types))
		for t := range types {
			keys = append(keys, int(t))
		}
		sort.Ints(keys)
		for _, t := range keys {
			a.Answer = append(a.Answer, rename(types[uint16(t)])...)
		}
	case len(types[qtype]) > 0:
		a.Answer = rename(types[qtype])
	case len(types[dns.TypeCNAME]) > 0:
		a.Answer = rename(types[dns.TypeCNAME])
	default:
		if z := r.zones[apex]; z != nil {
			a.Ns = []dns.RR{r.soaLocked(apex, z)}
		} else {
			// Stand-alone name: NODATA with a SOA for the name itself, so
			// resolvers can cache the negative answer.
			a.Ns = []dns.RR{synthSOA(owner)}
		}
	}
	return a
}
