package dnssplit

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/netcore"
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
	cuts  int                            // names with an NS RRset: none means no zone-cut walk
	// dnames counts names with a DNAME: none means no DNAME walk.
	dnames int
	watch  []func(zone string)
	// gen counts changes: a packed answer made before the last change is
	// not served again (the answer cache compares it).
	gen atomic.Uint64
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
	// Rcode is dns.RcodeSuccess or dns.RcodeNameError; under a DNAME
	// (RFC 6672) also dns.RcodeYXDomain (the substituted name is longer
	// than 255 octets) or dns.RcodeServerFailure (a loop of DNAMEs).
	Rcode int
	// Zone is the apex of the zone holding the name, or "" for a stand-alone record.
	Zone   string
	Answer []dns.RR
	Ns     []dns.RR
	// Extra is the additional section: addresses of in-zone NS, MX and SRV
	// targets, and the glue of a referral.
	Extra []dns.RR
	// Referral reports that the name is at or below a zone cut (a
	// delegation to other servers): the answer is not authoritative and Ns
	// holds the child zone's NS RRset.
	Referral bool

	// synthesized: the last answer record is a CNAME made from a DNAME;
	// viaDNAME: the chain went through one.
	synthesized, viaDNAME bool
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
	if err := netcore.Join(errs...); err != nil {
		return err
	}
	return r.Add(rrs...)
}

// LoadZone reads a whole zone file with dns.ZoneParser and adds its records.
// origin is the zone's apex ($ORIGIN); file names the source in errors. The
// zone is declared even if the file has no SOA (one is synthesized).
func (r *Records) LoadZone(rd io.Reader, origin, file string) error {
	origin = dns.Fqdn(origin)
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
	apex = nameKey(apex)
	r.mu.Lock()
	r.init()
	if r.zones[apex] == nil {
		r.zones[apex] = &zoneState{soa: synthSOA(apex)}
		r.gen.Add(1)
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
		h.Name = dns.Fqdn(h.Name) // spelt as given; found by nameKey
		if h.Class == 0 {
			h.Class = dns.ClassINET
		}
		key := nameKey(h.Name)
		types := r.names[key]
		if types == nil {
			types = make(map[uint16][]dns.RR)
			r.names[key] = types
			r.countNode(key, 1)
		}
		if soa, ok := rr.(*dns.SOA); ok {
			z := r.zones[key]
			if z == nil {
				z = &zoneState{}
				r.zones[key] = z
			}
			z.soa, z.explicit = soa, true
			types[dns.TypeSOA] = []dns.RR{soa}
			changed[key] = true
			soaGiven[key] = true // the data brings its own serial
			continue
		}
		if !containsRR(types[h.Rrtype], rr) {
			if h.Rrtype == dns.TypeNS && len(types[dns.TypeNS]) == 0 {
				r.cuts++
			}
			if h.Rrtype == dns.TypeDNAME {
				if len(types[dns.TypeDNAME]) > 0 {
					continue // RFC 6672 section 2.4: one DNAME per owner; the first stays
				}
				r.dnames++
			}
			types[h.Rrtype] = append(types[h.Rrtype], rr)
		}
		changed[r.zoneOfLocked(key)] = true
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
	name = dns.Fqdn(name)
	key := nameKey(name)
	set := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		h := rr.Header()
		if nameKey(h.Name) != key || h.Rrtype != rrtype {
			return fmt.Errorf("dnssplit: set %s %s: record %q does not match", name, dns.TypeToString[rrtype], rr.String())
		}
		rr = dns.Copy(rr)
		rr.Header().Name = dns.Fqdn(rr.Header().Name)
		if rr.Header().Class == 0 {
			rr.Header().Class = dns.ClassINET
		}
		set = append(set, rr)
	}
	r.mu.Lock()
	r.init()
	types := r.names[key]
	if rrtype == dns.TypeNS && types != nil && len(types[dns.TypeNS]) > 0 {
		r.cuts--
	}
	if rrtype == dns.TypeDNAME && types != nil && len(types[dns.TypeDNAME]) > 0 {
		r.dnames--
	}
	if rrtype == dns.TypeDNAME && len(set) > 1 {
		set = set[:1] // one DNAME per owner
	}
	if len(set) == 0 {
		if types != nil {
			delete(types, rrtype)
			if len(types) == 0 {
				delete(r.names, key)
				r.countNode(key, -1)
			}
		}
	} else {
		if types == nil {
			types = make(map[uint16][]dns.RR)
			r.names[key] = types
			r.countNode(key, 1)
		}
		types[rrtype] = set
		if rrtype == dns.TypeNS {
			r.cuts++
		}
		if rrtype == dns.TypeDNAME {
			r.dnames++
		}
	}
	changed := map[string]bool{r.zoneOfLocked(key): true}
	fns := r.bumpLocked(changed)
	r.mu.Unlock()
	notifyAll(fns, changed)
	return nil
}

// Remove removes every RRset of name.
func (r *Records) Remove(name string) {
	name = nameKey(name)
	r.mu.Lock()
	r.init()
	if types, ok := r.names[name]; ok {
		if len(types[dns.TypeNS]) > 0 {
			r.cuts--
		}
		if len(types[dns.TypeDNAME]) > 0 {
			r.dnames--
		}
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
	r.gen.Add(1)
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
	apex = nameKey(apex)
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
	apex = nameKey(apex)
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

// maxCNAMEChain bounds how many local CNAMEs one answer follows, so a long
// chain in the data cannot make one query expensive; a loop ends earlier, at
// the first name seen twice.
const maxCNAMEChain = 8

// nameKey is the map key of a domain name: lower case, and with escapes in
// their one canonical form, so that "sp\032ace", "sp\ ace" (how miekg/dns
// prints the name it read from the wire) and "\097lpha" / "alpha" meet.
func nameKey(name string) string {
	name = dns.Fqdn(name)
	if strings.IndexByte(name, '\\') >= 0 {
		buf := make([]byte, 256)
		if n, err := dns.PackDomainName(name, buf, 0, nil, false); err == nil {
			if s, _, err := dns.UnpackDomainName(buf[:n], 0); err == nil {
				name = s
			}
		}
	}
	return strings.ToLower(name)
}

// Lookup answers name and qtype from the local data as an authoritative
// server does (RFC 1034 section 4.3.2): below a zone cut the answer is a
// referral; an existing name or empty non-terminal blocks the wildcard (RFC
// 4592); local CNAMEs are followed, and the rcode and authority section are
// those of the chain's end (RFC 6604); negative answers carry the SOA with
// TTL min(SOA TTL, MINIMUM) (RFC 2308 section 3); Extra holds the addresses
// of in-zone NS, MX and SRV targets. Owner names at the query name are
// spelt as asked. A zero-value Answer (Local false) means the name is not local.
func (r *Records) Lookup(name string, qtype uint16) Answer {
	qname := dns.Fqdn(name)
	key := nameKey(qname)
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.names == nil {
		return Answer{}
	}
	a := r.lookupLocked(qname, key, qtype)
	// A CNAME query, or ANY at a CNAME, gets the CNAME alone; ANY under a
	// DNAME follows the synthesized CNAME, as Knot answers.
	if !a.Local || a.Referral || a.Rcode != dns.RcodeSuccess || qtype == dns.TypeCNAME || (qtype == dns.TypeANY && !a.synthesized) {
		return a
	}
	seen := map[string]bool{key: true}
	viaDNAME := a.synthesized
	for len(a.Answer) > 0 {
		last, ok := a.Answer[len(a.Answer)-1].(*dns.CNAME)
		if !ok {
			break
		}
		tkey := nameKey(last.Target)
		if seen[tkey] || len(seen) > maxCNAMEChain {
			if viaDNAME && seen[tkey] {
				// A loop through a DNAME: SERVFAIL with the chain, as BIND.
				a.Rcode, a.Ns, a.Extra = dns.RcodeServerFailure, nil, nil
			}
			break // a loop, or a chain too long: end it here, as Knot does
		}
		seen[tkey] = true
		tname := dns.Fqdn(last.Target)
		if a.synthesized {
			tname = tkey // the zone's spelling past the DNAME, as both peers print it
		}
		next := r.lookupLocked(tname, tkey, qtype)
		viaDNAME = viaDNAME || next.synthesized
		if !next.Local || next.Referral {
			break // outside the local data: the client's resolver goes on
		}
		a.Answer = append(a.Answer, next.Answer...)
		a.Rcode, a.Ns, a.Extra, a.synthesized = next.Rcode, next.Ns, next.Extra, next.synthesized
		if next.Rcode != dns.RcodeSuccess || len(next.Answer) == 0 {
			break // NXDOMAIN or NODATA at the chain's end
		}
	}
	a.viaDNAME = viaDNAME
	return a
}

func (r *Records) lookupLocked(qname, key string, qtype uint16) Answer {
	apex := r.zoneOfLocked(key)
	if apex != "" {
		// DS at a cut is the parent's data (RFC 4035 section 3.1.4.1).
		if cut := r.cutLocked(key, apex); cut != "" && (cut != key || qtype != dns.TypeDS) {
			return r.referralLocked(cut, apex)
		}
	}
	if apex != "" {
		if d := r.dnameLocked(key, apex); d != nil {
			return synthesize(qname, d, apex)
		}
	}
	if key == apex && (qtype == dns.TypeSOA || qtype == dns.TypeANY) {
		if z := r.zones[apex]; !z.explicit {
			soa := dns.Copy(r.soaLocked(apex, z))
			soa.Header().Name = qname
			a := Answer{Local: true, Zone: apex, Answer: []dns.RR{soa}}
			if qtype == dns.TypeANY {
				a.Answer = append(a.Answer, r.fromNode(qname, key, apex, r.names[key], qtype).Answer...)
			}
			return a
		}
	}
	if types, ok := r.names[key]; ok {
		return r.fromNode(qname, key, apex, types, qtype)
	}
	if apex != "" && r.below[key] > 0 {
		return Answer{Local: true, Zone: apex, Ns: r.negativeLocked(apex)} // empty non-terminal: NODATA
	}
	// RFC 4592: only the wildcard at the closest encloser (the nearest
	// existing ancestor, empty non-terminals included) applies.
	if r.wild > 0 {
		for n := key; ; {
			i, end := dns.NextLabel(n, 0)
			if end {
				break
			}
			n = n[i:]
			if types, ok := r.names["*."+n]; ok {
				return r.fromNode(qname, "*."+n, apex, types, qtype)
			}
			if _, ok := r.names[n]; ok || r.below[n] > 0 || n == apex {
				break
			}
		}
	}
	if apex == "" {
		return Answer{}
	}
	return Answer{Local: true, Rcode: dns.RcodeNameError, Zone: apex, Ns: r.negativeLocked(apex)}
}

// dnameLocked returns the DNAME (RFC 6672) at the highest proper ancestor
// of key inside zone apex (its apex included) that has one: the names below
// it are occluded, whatever data they have.
func (r *Records) dnameLocked(key, apex string) *dns.DNAME {
	if r.dnames == 0 || key == apex {
		return nil
	}
	var d *dns.DNAME
	for n := key; n != apex; {
		i, end := dns.NextLabel(n, 0)
		if end {
			return d
		}
		n = n[i:]
		if rrs := r.names[n][dns.TypeDNAME]; len(rrs) > 0 {
			d = rrs[0].(*dns.DNAME)
		}
	}
	return d
}

// synthesize answers qname, which lies under DNAME d: the DNAME and the
// CNAME it implies (owner as asked, the DNAME's TTL, RFC 6672 section
// 3.1), or YXDOMAIN with the DNAME alone when the substituted name would be
// longer than 255 octets (section 2.2).
func synthesize(qname string, d *dns.DNAME, apex string) Answer {
	labels := dns.CountLabel(d.Hdr.Name)
	idx := dns.Split(qname)
	cut := idx[len(idx)-labels]
	// As Knot answers: the DNAME's owner spelt as asked, the substituted
	// name in lower case.
	if owner := qname[cut:]; owner != d.Hdr.Name {
		d = dns.Copy(d).(*dns.DNAME)
		d.Hdr.Name = owner
	}
	prefix := strings.ToLower(qname[:cut])
	target := prefix + dns.Fqdn(d.Target)
	if d.Target == "." {
		target = prefix
	}
	a := Answer{Local: true, Zone: apex, Answer: []dns.RR{d}}
	if _, ok := dns.IsDomainName(target); !ok { // longer than 255 octets, among others
		a.Rcode = dns.RcodeYXDomain
		return a
	}
	cname := &dns.CNAME{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeCNAME, Class: d.Hdr.Class, Ttl: d.Hdr.Ttl}, Target: target}
	a.Answer = append(a.Answer, cname)
	a.synthesized = true
	return a
}

// cutLocked returns the highest delegation (a name with NS below the apex)
// at or above key inside zone apex, or "".
func (r *Records) cutLocked(key, apex string) string {
	if r.cuts == 0 || key == apex {
		return ""
	}
	// Collect the names from key up to (not including) the apex, then
	// look from the top down.
	var chain []string
	for n := key; n != apex; {
		chain = append(chain, n)
		i, end := dns.NextLabel(n, 0)
		if end {
			return ""
		}
		n = n[i:]
	}
	for i := len(chain) - 1; i >= 0; i-- {
		if len(r.names[chain[i]][dns.TypeNS]) > 0 {
			return chain[i]
		}
	}
	return ""
}

// referralLocked answers for a name at or below the cut: not
// authoritative, the child's NS in authority, their addresses (glue) in
// additional.
func (r *Records) referralLocked(cut, apex string) Answer {
	ns := r.names[cut][dns.TypeNS]
	return Answer{Local: true, Referral: true, Zone: apex, Ns: ns, Extra: r.addressesLocked(ns, apex)}
}

// negativeLocked is the authority section of NXDOMAIN and NODATA: the SOA
// with the negative TTL, min(SOA TTL, MINIMUM) (RFC 2308 section 3).
func (r *Records) negativeLocked(apex string) []dns.RR {
	soa := r.soaLocked(apex, r.zones[apex])
	if soa.Minttl < soa.Hdr.Ttl {
		soa = dns.Copy(soa).(*dns.SOA)
		soa.Hdr.Ttl = soa.Minttl
	}
	return []dns.RR{soa}
}

// addressesLocked returns the A and AAAA records of the NS, MX and SRV
// targets in rrs that lie in zone apex (glue below a cut included), for the
// additional section.
func (r *Records) addressesLocked(rrs []dns.RR, apex string) []dns.RR {
	if apex == "" {
		return nil
	}
	var out []dns.RR
	seen := map[string]bool{}
	for _, rr := range rrs {
		var target string
		switch rr := rr.(type) {
		case *dns.NS:
			target = rr.Ns
		case *dns.MX:
			target = rr.Mx
		case *dns.SRV:
			target = rr.Target
		default:
			continue
		}
		k := nameKey(target)
		if seen[k] || !dns.IsSubDomain(apex, k) || r.zoneOfLocked(k) != apex {
			continue
		}
		seen[k] = true
		out = append(out, r.names[k][dns.TypeA]...)
		out = append(out, r.names[k][dns.TypeAAAA]...)
	}
	return out
}

func (r *Records) fromNode(qname, owner, apex string, types map[uint16][]dns.RR, qtype uint16) Answer {
	a := Answer{Local: true, Zone: apex}
	rename := func(set []dns.RR) []dns.RR {
		out := make([]dns.RR, len(set))
		for i, rr := range set {
			if rr.Header().Name != qname {
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
		a.Extra = r.addressesLocked(a.Answer, apex)
	case len(types[dns.TypeCNAME]) > 0:
		a.Answer = rename(types[dns.TypeCNAME])
	default:
		if z := r.zones[apex]; z != nil {
			a.Ns = r.negativeLocked(apex)
		} else {
			// Stand-alone name: NODATA with a SOA for the name itself, so
			// resolvers can cache the negative answer.
			a.Ns = []dns.RR{synthSOA(owner)}
		}
	}
	return a
}

// carrySerials makes the serials of r follow those of old, the records the
// same view served before a reload, so that a secondary follows every change
// and transfers nothing when nothing changed: a zone whose records are the
// same keeps old's serial; a changed zone with a synthesized SOA gets a
// serial above old's (RFC 1982); a changed zone whose data brings its own
// SOA keeps it, and is returned in stale when that serial is not above
// old's, since secondaries would then keep the old data.
func (r *Records) carrySerials(old *Records) (stale []SerialWarning) {
	if r == old || old == nil {
		return nil
	}
	for _, apex := range r.Zones() {
		oldSOA, ok := old.SOA(apex)
		if !ok {
			continue
		}
		same := sameZoneContent(r, old, apex)
		r.mu.Lock()
		z := r.zones[apex]
		soa := dns.Copy(r.soaLocked(apex, z)).(*dns.SOA)
		switch {
		case z.explicit:
			if !same && !serialLess(oldSOA.Serial, soa.Serial) {
				stale = append(stale, SerialWarning{Zone: apex, Old: oldSOA.Serial, New: soa.Serial})
			}
		case same:
			soa.Serial = oldSOA.Serial
		case !serialLess(oldSOA.Serial, soa.Serial):
			soa.Serial = oldSOA.Serial + 1
		}
		z.soa = soa
		if z.explicit {
			r.names[apex][dns.TypeSOA] = []dns.RR{soa}
		}
		r.gen.Add(1)
		r.mu.Unlock()
	}
	return stale
}

// SerialWarning names a zone whose data changed on a reload while the SOA
// serial that data brings did not increase.
type SerialWarning struct {
	Zone     string
	Old, New uint32
}

// sameZoneContent reports whether apex holds the same records, SOA serial
// aside, in a and b.
func sameZoneContent(a, b *Records, apex string) bool {
	ra, _ := a.ZoneRecords(apex)
	rb, _ := b.ZoneRecords(apex)
	if len(ra) != len(rb) {
		return false
	}
	key := func(rrs []dns.RR) []string {
		out := make([]string, len(rrs))
		for i, rr := range rrs {
			rr = dns.Copy(rr)
			rr.Header().Name = dns.CanonicalName(rr.Header().Name)
			if soa, ok := rr.(*dns.SOA); ok {
				soa.Serial = 0
			}
			out[i] = rr.String()
		}
		sort.Strings(out)
		return out
	}
	return slices.Equal(key(ra), key(rb))
}
