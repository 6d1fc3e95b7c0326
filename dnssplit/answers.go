package dnssplit

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// answers caches the packed UDP replies of static queries (see
// outcome.static): local answers whose bytes depend only on the query's
// bytes, the view and the view's records, and forwarded answers taken
// whole from a fresh entry of the cache of forwarded answers (which stays
// the source of truth). A query whose bytes, all but the
// ID, equal those of a cached one from a client given the same view is
// answered by copying the reply and patching the ID in, without parsing or
// packing, as Knot and unbound answer from packed data. Mixed-case spellings
// of a name are separate entries, so the reply keeps the query's spelling
// byte for byte. An entry is not served once the view's records change
// (Records.gen) or the views are replaced (gen); a forwarded one neither
// once its cache entry left the cache (expired, evicted, replaced) nor past
// the entry's fresh time, and its TTLs are reduced by the entry's age at
// the offsets noted when it was packed, as the cache ages them.
type answers struct {
	mu   sync.RWMutex
	m    map[string]*packedAnswer
	gen  atomic.Uint64 // bumped by SetViews
	hits atomic.Uint64 // replies served from the cache (tests)
}

type packedAnswer struct {
	view    *View
	recurse bool
	recs    *Records // view.Records when packed
	records uint64   // recs.gen when packed
	gen     uint64   // answers.gen when packed
	reply   []byte
	count   *atomic.Uint64 // the stats counter of view and rcode

	// A forwarded answer: packed from fwd, stored at stored, with its
	// TTLs (at offsets ttls of reply) aged by age seconds; served until.
	fwd    *cacheEntry
	stored time.Time
	until  time.Time
	age    uint32
	ttls   []uint16
}

const (
	// answerCacheSize bounds the entries: a flood of distinct names
	// replaces entries (one at random) instead of growing memory.
	answerCacheSize = 4096
	// answerKeyMax bounds the query bytes of a cacheable query; larger
	// ones (long names with EDNS padding, say) take the normal path.
	answerKeyMax = 300
)

// key writes the cache key of query b from a client given view index
// index into buf: the view, recurse and every byte but the ID.
func answerKey(buf *[answerKeyMax + 3]byte, b []byte, index int, recurse bool) []byte {
	buf[0], buf[1] = byte(index>>8), byte(index)
	buf[2] = 0
	if recurse {
		buf[2] = 1
	}
	n := copy(buf[3:], b[2:])
	return buf[:3+n]
}

// lookup returns the cached reply of query b, or nil.
func (a *answers) lookup(b []byte, c Choice, recurse bool) *packedAnswer {
	var kb [answerKeyMax + 3]byte
	key := answerKey(&kb, b, c.Index, recurse)
	a.mu.RLock()
	e := a.m[string(key)]
	a.mu.RUnlock()
	if e == nil || e.view != c.View || e.recurse != recurse || e.gen != a.gen.Load() ||
		e.view == nil || e.view.Records != e.recs || e.recs != nil && e.records != e.recs.gen.Load() ||
		e.fwd != nil && e.fwd.gone.Load() {
		return nil
	}
	return e
}

// store caches reply, the answer to query b, when oc says it is static.
// oc.records is the view's Records.gen read before the answer was made, so
// that a change during it is never hidden.
func (s *Server) storeAnswer(b, reply []byte, oc outcome) {
	if !oc.static || oc.view == nil || len(b) < 12 || len(b) > answerKeyMax {
		return
	}
	e := &packedAnswer{view: oc.view, recurse: oc.recurse, recs: oc.view.Records, records: oc.records, gen: oc.gen,
		reply: append([]byte(nil), reply...), count: s.stats.counter(oc.view.Name, oc.rcode)}
	if e.recs == nil && oc.entry == nil {
		return // a static answer without records: REFUSED or SERVFAIL, not worth it
	}
	if oc.entry != nil {
		ttls, ok := ttlOffsets(reply)
		if !ok {
			return
		}
		e.fwd, e.stored, e.until, e.age, e.ttls = oc.entry, oc.entry.stored, s.cache.freshUntil(oc.entry), oc.age, ttls
	}
	var kb [answerKeyMax + 3]byte
	key := string(answerKey(&kb, b, oc.index, oc.recurse))
	a := &s.answers
	a.mu.Lock()
	if a.m == nil {
		a.m = make(map[string]*packedAnswer)
	}
	if _, ok := a.m[key]; !ok && len(a.m) >= answerCacheSize {
		for k := range a.m { // map order is random: evict one entry at random
			delete(a.m, k)
			break
		}
	}
	a.m[key] = e
	a.mu.Unlock()
}

// cachedReply answers a UDP query from the answer cache, or reports ok false
// for the normal path, which then runs with *ps (the rate limit's verdict
// carried over when it was applied here). dst, when large enough, receives
// the reply (it may be the query's own buffer: b is read first).
func (s *Server) cachedReply(b []byte, src netip.AddrPort, local netip.Addr, ps *pass, dst []byte) (out []byte, oc outcome, ok bool) {
	if len(b) < 12 || len(b) > answerKeyMax || b[2]&0x80 != 0 {
		return nil, outcome{}, false
	}
	gen := s.answers.gen.Load()
	c := SelectView(s.views(), s.TrustedProxies, Client{Source: src.Addr(), Local: local})
	ps.chosen, ps.choice, ps.gen = true, c, gen
	v := c.View
	if v == nil {
		return nil, outcome{}, false
	}
	recurse := v.Recursion && c.Reason != ReasonDefault
	e := s.answers.lookup(b, c, recurse)
	if e == nil {
		return nil, outcome{}, false
	}
	var aging uint32 // seconds the forwarded entry aged since it was packed
	if e.fwd != nil {
		now := s.cache.now()
		if !now.Before(e.until) {
			return nil, outcome{}, false
		}
		secs := uint32(now.Sub(e.stored) / time.Second)
		if secs < e.age {
			return nil, outcome{}, false // a clock stepped back: let the cache decide
		}
		aging = secs - e.age
	}
	oc.charged = ps.charged
	if s.limiter != nil && !ps.charged {
		oc.charged = true
		switch s.limiter.allow(src.Addr()) {
		case limitDrop:
			s.stats.rateLimited.Add(1)
			return nil, oc, true
		case limitSlip: // the normal path makes the truncated reply
			ps.charged, ps.limit = true, limitSlip
			return nil, oc, false
		}
	}
	id0, id1 := b[0], b[1]
	if cap(dst) >= len(e.reply) {
		out = dst[:len(e.reply)]
	} else {
		out = make([]byte, len(e.reply))
	}
	copy(out, e.reply)
	out[0], out[1] = id0, id1
	if aging > 0 {
		for _, off := range e.ttls {
			ttl := binary.BigEndian.Uint32(out[off:])
			binary.BigEndian.PutUint32(out[off:], ttl-min(ttl, aging))
		}
	}
	e.count.Add(1)
	if e.fwd != nil {
		s.stats.cacheHits.Add(1)
		e.fwd.hits.Add(1)
	}
	s.answers.hits.Add(1)
	return out, oc, true
}

// ttlOffsets returns the offsets of the TTL of every record of packed
// message b but the OPT (whose TTL field holds flags), or ok false if b
// does not walk as a DNS message. b is a reply this server packed.
func ttlOffsets(b []byte) (offs []uint16, ok bool) {
	if len(b) < 12 || len(b) > 0xFFFF {
		return nil, false
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	rrs := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	off := 12
	for range qd {
		if off = skipName(b, off); off < 0 || off+4 > len(b) {
			return nil, false
		}
		off += 4
	}
	offs = make([]uint16, 0, rrs)
	for range rrs {
		if off = skipName(b, off); off < 0 || off+10 > len(b) {
			return nil, false
		}
		if binary.BigEndian.Uint16(b[off:]) != dns.TypeOPT {
			offs = append(offs, uint16(off+4))
		}
		off += 10 + int(binary.BigEndian.Uint16(b[off+8:]))
		if off > len(b) {
			return nil, false
		}
	}
	return offs, off == len(b)
}

// skipName returns the offset after the (possibly compressed) name at off
// in b, or -1.
func skipName(b []byte, off int) int {
	for off < len(b) {
		switch l := int(b[off]); {
		case l == 0:
			return off + 1
		case l&0xC0 == 0xC0:
			if off+2 > len(b) {
				return -1
			}
			return off + 2
		case l&0xC0 != 0:
			return -1
		default:
			off += 1 + l
		}
	}
	return -1
}
