package dnssplit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// CacheConfig configures the cache of forwarded answers. Its zero value is a
// 10 000-entry cache that serves stale answers for a day when no upstream
// answers (RFC 8767).
type CacheConfig struct {
	// Disabled turns the cache off (and with it serve-stale).
	Disabled bool

	// MaxEntries optionally bounds the number of cached answers; if zero,
	// 10 000 is used.
	MaxEntries int

	// MinTTL and MaxTTL optionally clamp the TTL of cached answers; zero
	// means no minimum and a one-day maximum.
	MinTTL, MaxTTL time.Duration

	// NegativeTTL optionally caps how long NXDOMAIN and NODATA answers are
	// cached (RFC 2308, from the SOA in the answer); if zero, one hour.
	NegativeTTL time.Duration

	// StaleFor optionally sets how long past expiry an answer may be served
	// when no upstream answers; if zero, one day; negative disables
	// serve-stale.
	StaleFor time.Duration

	// StaleAnswerTimeout optionally sets how long a query with a stale
	// answer at hand waits for the upstreams before the stale answer is
	// sent (the refresh goes on in the background); if zero, 1.8 s as RFC
	// 8767 suggests, shorter than common client timeouts.
	StaleAnswerTimeout time.Duration

	// HoldNXDOMAIN, if set, answers a sudden NXDOMAIN from upstream for a
	// name that had a positive answer with that (stale) positive answer
	// instead, until the positive answer is past StaleFor: a broken or
	// lying TLD (the 2016 .io incident) does not make names vanish.
	HoldNXDOMAIN bool

	// Prefetch, if set, refreshes a popular answer in the background shortly
	// before it expires.
	Prefetch bool

	// PersistPath optionally names a file the cache is saved to every
	// minute and on Shutdown, and loaded from at start, so a restart during
	// an upstream outage still answers stale.
	PersistPath string
}

const (
	defaultMaxEntries  = 10000
	defaultMaxTTL      = 24 * time.Hour
	defaultNegativeTTL = time.Hour
	defaultStaleFor    = 24 * time.Hour
	// defaultStaleAnswerTimeout is RFC 8767's suggested client response timer.
	defaultStaleAnswerTimeout = 1800 * time.Millisecond
	// staleTTL is the TTL of a stale answer, as RFC 8767 recommends.
	staleTTL = 30
	// persistInterval is how often the cache is saved when PersistPath is set.
	persistInterval = time.Minute
	// prefetchHits is how many hits make an answer popular enough to prefetch.
	prefetchHits = 3
)

type cacheKey struct {
	View  string `json:"v"`
	Name  string `json:"n"`
	Type  uint16 `json:"t"`
	Class uint16 `json:"c"`
	DO    bool   `json:"do,omitempty"`
	CD    bool   `json:"cd,omitempty"`
}

type cacheEntry struct {
	msg      *dns.Msg
	stored   time.Time
	ttl      time.Duration
	positive bool
	hits     atomic.Int64 // the answer cache's hits count too (prefetch popularity)
	fetching bool
	// gone is set once the entry left the map (expired, evicted, replaced):
	// the answer cache stops serving replies packed from it.
	gone atomic.Bool
	// rendered is msg with TTLs aged by renderedAge seconds, shared by all
	// hits within that second (read-only): a busy name costs one copy per
	// second, not one per query.
	rendered    *dns.Msg
	renderedAge uint32
}

type cache struct {
	cfg     CacheConfig
	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
	// clock is the cache's time (tests set it with setClock, even while
	// serving: the answer cache reads it without mu); nil means time.Now.
	clock atomic.Pointer[func() time.Time]
}

func newCache(cfg CacheConfig) *cache {
	return &cache{cfg: cfg, entries: make(map[cacheKey]*cacheEntry)}
}

func (c *cache) now() time.Time {
	if f := c.clock.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

func (c *cache) setClock(f func() time.Time) { c.clock.Store(&f) }

func (c *cache) maxEntries() int {
	if c.cfg.MaxEntries > 0 {
		return c.cfg.MaxEntries
	}
	return defaultMaxEntries
}

func (c *cache) maxTTL() time.Duration {
	if c.cfg.MaxTTL > 0 {
		return c.cfg.MaxTTL
	}
	return defaultMaxTTL
}

func (c *cache) staleFor() time.Duration {
	switch {
	case c.cfg.StaleFor < 0:
		return 0
	case c.cfg.StaleFor == 0:
		return defaultStaleFor
	}
	return c.cfg.StaleFor
}

type cacheState int

const (
	cacheMiss cacheState = iota
	cacheFresh
	cacheStale
)

// cached is what the cache holds for a key.
type cached struct {
	msg      *dns.Msg // TTLs aged; shared: read only
	state    cacheState
	positive bool
	prefetch bool // the caller should refresh the entry in the background
	// entry and age, for a fresh answer: msg is entry's message with
	// every TTL reduced by age seconds (down to 0).
	entry *cacheEntry
	age   uint32
}

// get returns the cached answer with TTLs aged, and whether it is fresh,
// stale (past TTL but within StaleFor) or missing.
func (c *cache) get(k cacheKey) cached {
	if c.cfg.Disabled {
		return cached{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	e := c.entries[k]
	if e == nil {
		return cached{}
	}
	age := now.Sub(e.stored)
	if age < e.ttl {
		hits := e.hits.Add(1)
		prefetch := false
		if c.cfg.Prefetch && !e.fetching && hits >= prefetchHits && e.ttl-age < e.ttl/10 {
			e.fetching, prefetch = true, true
		}
		secs := uint32(age / time.Second)
		if e.rendered == nil || e.renderedAge != secs {
			e.rendered, e.renderedAge = aged(e.msg, secs, 0), secs
		}
		return cached{msg: e.rendered, state: cacheFresh, positive: e.positive, prefetch: prefetch, entry: e, age: secs}
	}
	if age < e.ttl+c.staleFor() {
		return cached{msg: aged(e.msg, 0, staleTTL), state: cacheStale, positive: e.positive}
	}
	c.removeLocked(k, e)
	return cached{}
}

// removeLocked deletes entry e of key k.
func (c *cache) removeLocked(k cacheKey, e *cacheEntry) {
	e.gone.Store(true)
	delete(c.entries, k)
}

// freshUntil is when a reply packed from fresh entry e must stop being
// served without asking the cache: at expiry, or with Prefetch where the
// refresh window starts, so that the cache sees the hits that trigger it.
func (c *cache) freshUntil(e *cacheEntry) time.Time {
	if c.cfg.Prefetch {
		return e.stored.Add(e.ttl - e.ttl/10)
	}
	return e.stored.Add(e.ttl)
}

// aged copies m with every TTL reduced by age, or set to fixed if non-zero.
func aged(m *dns.Msg, age, fixed uint32) *dns.Msg {
	out := m.Copy()
	for _, sec := range [][]dns.RR{out.Answer, out.Ns, out.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			switch {
			case fixed != 0:
				h.Ttl = fixed
			case h.Ttl > age:
				h.Ttl -= age
			default:
				h.Ttl = 0
			}
		}
	}
	return out
}

// ttlOf computes how long m may be cached: the smallest TTL for a positive
// answer, the SOA's negative TTL (RFC 2308) for NXDOMAIN or NODATA; zero
// means do not cache.
func (c *cache) ttlOf(m *dns.Msg) (time.Duration, bool) {
	positive := m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0
	var ttl time.Duration
	if positive {
		minTTL := ^uint32(0)
		for _, rr := range m.Answer {
			minTTL = min(minTTL, rr.Header().Ttl)
		}
		ttl = time.Duration(minTTL) * time.Second
		if ttl < c.cfg.MinTTL {
			ttl = c.cfg.MinTTL
		}
		return min(ttl, c.maxTTL()), true
	}
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return 0, false
	}
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			neg := c.cfg.NegativeTTL
			if neg <= 0 {
				neg = defaultNegativeTTL
			}
			return min(ttl, neg), false
		}
	}
	return 0, false // RFC 2308: no SOA, no negative caching
}

// put stores an upstream answer.
func (c *cache) put(k cacheKey, m *dns.Msg) {
	if c.cfg.Disabled {
		return
	}
	ttl, positive := c.ttlOf(m)
	if ttl <= 0 {
		return
	}
	stored := m.Copy()
	stored.Extra = stripOPT(stored.Extra)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[k]; ok {
		old.gone.Store(true)
	} else if len(c.entries) >= c.maxEntries() {
		c.evictLocked()
	}
	c.entries[k] = &cacheEntry{msg: stored, stored: c.now(), ttl: ttl, positive: positive}
}

func (c *cache) done(k cacheKey) {
	c.mu.Lock()
	if e := c.entries[k]; e != nil {
		e.fetching = false
	}
	c.mu.Unlock()
}

// evictLocked makes room: entries past their stale window first, else the
// one of a small random sample (Go map order) closest to expiry.
func (c *cache) evictLocked() {
	now := c.now()
	var victim *cacheKey
	var victimEntry *cacheEntry
	var soonest time.Time
	n := 0
	for k, e := range c.entries {
		end := e.stored.Add(e.ttl + c.staleFor())
		if end.Before(now) {
			c.removeLocked(k, e)
			return
		}
		if victim == nil || end.Before(soonest) {
			kk := k
			victim, victimEntry, soonest = &kk, e, end
		}
		if n++; n >= 16 {
			break
		}
	}
	if victim != nil {
		c.removeLocked(*victim, victimEntry)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func stripOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

type persisted struct {
	Key    cacheKey  `json:"k"`
	Msg    []byte    `json:"m"`
	Stored time.Time `json:"s"`
	TTL    int64     `json:"ttl"`
}

// save writes the cache to PersistPath atomically (temporary file, rename).
func (c *cache) save() error {
	if c.cfg.PersistPath == "" || c.cfg.Disabled {
		return nil
	}
	c.mu.Lock()
	out := make([]persisted, 0, len(c.entries))
	for k, e := range c.entries {
		b, err := e.msg.Pack()
		if err != nil {
			continue
		}
		out = append(out, persisted{Key: k, Msg: b, Stored: e.stored, TTL: int64(e.ttl)})
	}
	c.mu.Unlock()
	data, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("dnssplit: persist cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.cfg.PersistPath), ".dnssplit-cache-*")
	if err != nil {
		return fmt.Errorf("dnssplit: persist cache: %w", err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := netcore.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("dnssplit: persist cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.cfg.PersistPath); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("dnssplit: persist cache: %w", err)
	}
	return nil
}

// load reads PersistPath if it exists; entries past their stale window are skipped.
func (c *cache) load() error {
	if c.cfg.PersistPath == "" || c.cfg.Disabled {
		return nil
	}
	data, err := os.ReadFile(c.cfg.PersistPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dnssplit: load cache: %w", err)
	}
	var in []persisted
	if err := json.Unmarshal(data, &in); err != nil {
		return fmt.Errorf("dnssplit: load cache %s: %w", c.cfg.PersistPath, err)
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range in {
		m := new(dns.Msg)
		if m.Unpack(p.Msg) != nil {
			continue
		}
		ttl := time.Duration(p.TTL)
		if p.Stored.Add(ttl + c.staleFor()).Before(now) {
			continue
		}
		if len(c.entries) >= c.maxEntries() {
			break
		}
		c.entries[p.Key] = &cacheEntry{msg: m, stored: p.Stored, ttl: ttl,
			positive: m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0}
	}
	return nil
}
