package dnssplit

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// answers caches the packed UDP replies of static queries (see
// outcome.static): local answers whose bytes depend only on the query's
// bytes, the view and the view's records. A query whose bytes, all but the
// ID, equal those of a cached one from a client given the same view is
// answered by copying the reply and patching the ID in, without parsing or
// packing, as Knot and unbound answer from packed data. Mixed-case spellings
// of a name are separate entries, so the reply keeps the query's spelling
// byte for byte. An entry is not served once the view's records change
// (Records.gen) or the views are replaced (gen).
type answers struct {
	mu   sync.RWMutex
	m    map[string]*packedAnswer
	gen  atomic.Uint64 // bumped by SetViews
	hits atomic.Uint64 // replies served from the cache (tests)
}

type packedAnswer struct {
	view    *View
	recurse bool
	records uint64 // view.Records.gen when packed
	gen     uint64 // answers.gen when packed
	reply   []byte
	count   *atomic.Uint64 // the stats counter of view and rcode
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
		e.view == nil || e.view.Records == nil || e.records != e.view.Records.gen.Load() {
		return nil
	}
	return e
}

// store caches reply, the answer to query b, when oc says it is static.
// oc.records is the view's Records.gen read before the answer was made, so
// that a change during it is never hidden.
func (s *Server) storeAnswer(b, reply []byte, oc outcome) {
	if !oc.static || oc.view == nil || oc.view.Records == nil || len(b) < 12 || len(b) > answerKeyMax {
		return
	}
	e := &packedAnswer{view: oc.view, recurse: oc.recurse, records: oc.records, gen: oc.gen,
		reply: append([]byte(nil), reply...), count: s.stats.counter(oc.view.Name, oc.rcode)}
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
	c := SelectView(s.views(), s.TrustedProxies, Client{Source: src.Addr(), Local: local})
	v := c.View
	if v == nil {
		return nil, outcome{}, false
	}
	recurse := v.Recursion && c.Reason != ReasonDefault
	e := s.answers.lookup(b, c, recurse)
	if e == nil {
		return nil, outcome{}, false
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
	e.count.Add(1)
	s.answers.hits.Add(1)
	return out, oc, true
}
