package dnssplit

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Stats is a snapshot of the server's counters, plain data for a metrics
// exporter. Maps are bounded by the number of views and rcodes.
type Stats struct {
	// Queries counts answered queries by view name and rcode name
	// ("NOERROR", "NXDOMAIN", "REFUSED", ...). Queries rejected before a
	// view was chosen count under the view name "".
	Queries map[string]map[string]uint64

	CacheHits        uint64 // forwarded names answered from the cache
	CacheMisses      uint64 // forwarded names that went upstream
	CacheEntries     int    // answers in the cache now
	UpstreamFailures uint64 // queries no upstream answered
	UpstreamScrubbed uint64 // upstream records dropped: outside the question's answer chain, out of bailiwick, additional
	UpstreamLocal    uint64 // upstream answers whose chain entered the view's own data, completed from it
	StaleServed      uint64 // stale answers served (RFC 8767)
	HeldNXDOMAIN     uint64 // sudden NXDOMAIN answers replaced by the last positive answer
	RateLimited      uint64 // UDP queries dropped or slipped by the rate limit
	Malformed        uint64 // packets that did not parse
	TCPRejected      uint64 // TCP connections refused (per-source, per-network or total bound)
	TCPEvicted       uint64 // idle TCP connections closed to make room for a new one
	TransfersServed  uint64 // AXFR/IXFR answered
	TransfersRefused uint64 // AXFR/IXFR refused (ACL or TSIG)
	NotifiesSent     uint64 // NOTIFY messages acknowledged by a secondary

	Upstreams []UpstreamStats
}

type stats struct {
	mu      sync.Mutex
	queries map[string]map[string]*atomic.Uint64 // view → rcode name → count

	cacheHits, cacheMisses, upstreamFailures, staleServed, heldNXDOMAIN atomic.Uint64
	rateLimited, malformed, tcpRejected, tcpEvicted                     atomic.Uint64
	transfersServed, transfersRefused, notifiesSent                     atomic.Uint64
	upstreamLocal                                                       atomic.Uint64

	refusals refusals
}

func (s *stats) init() { s.queries = make(map[string]map[string]*atomic.Uint64) }

func (s *stats) count(view string, rcode int) {
	s.counter(view, rcode).Add(1)
	if rcode == dns.RcodeRefused {
		s.refusals.note(refusedQuery)
	}
}

// counter returns the count of answers with rcode in view; the answer cache
// keeps it, so that a cached answer is counted without a lock.
func (s *stats) counter(view string, rcode int) *atomic.Uint64 {
	name, ok := dns.RcodeToString[rcode]
	if !ok {
		name = "OTHER"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.queries[view]
	if m == nil {
		m = make(map[string]*atomic.Uint64)
		s.queries[view] = m
	}
	c := m[name]
	if c == nil {
		c = new(atomic.Uint64)
		m[name] = c
	}
	return c
}

// refusalKind names an event any internet host can trigger by asking.
type refusalKind int

const (
	refusedQuery    refusalKind = iota // REFUSED answer (no view, no recursion)
	refusedTCP                         // TCP connection refused at a bound
	refusedTransfer                    // AXFR/IXFR refused
	refusedRate                        // UDP reply dropped or slipped by the rate limit
	refusalKinds
)

var refusalNames = [refusalKinds]string{"queries", "tcp", "transfers", "rateLimited"}

// refusalSummaryInterval is the least time between two Warn summaries of
// refusals: each refusal logs at Debug (a remote host decides how many there
// are), and an operator still learns within a minute that they happen.
const refusalSummaryInterval = time.Minute

// refusals counts refusals since the last summary and logs a summary at
// Warn at most once per refusalSummaryInterval, from the goroutine whose
// refusal finds the interval over (no goroutine of its own).
type refusals struct {
	counts [refusalKinds]atomic.Uint64
	every  netcore.Every
	now    func() time.Time
	log    func() *slog.Logger
}

func (r *refusals) note(k refusalKind) {
	r.counts[k].Add(1)
	if r.log == nil {
		return
	}
	last, ok := r.every.Allow(r.now(), refusalSummaryInterval)
	if !ok {
		return
	}
	args := make([]any, 0, 2*refusalKinds+2)
	for i := range r.counts {
		if n := r.counts[i].Swap(0); n > 0 {
			args = append(args, refusalNames[i], n)
		}
	}
	if !last.IsZero() {
		args = append(args, "since", last.UTC().Format(time.RFC3339))
	}
	r.log().Warn("dnssplit: refused requests (each is logged at Debug)", args...)
}

func (s *Server) noteRefusal(k refusalKind) { s.stats.refusals.note(k) }

// Stats returns a snapshot of the counters. It is safe for concurrent use.
func (s *Server) Stats() Stats {
	s.init()
	st := Stats{
		Queries:          make(map[string]map[string]uint64),
		CacheHits:        s.stats.cacheHits.Load(),
		CacheMisses:      s.stats.cacheMisses.Load(),
		CacheEntries:     s.cache.len(),
		UpstreamFailures: s.stats.upstreamFailures.Load(),
		UpstreamScrubbed: s.fwd.scrubbed.Load(),
		UpstreamLocal:    s.stats.upstreamLocal.Load(),
		StaleServed:      s.stats.staleServed.Load(),
		HeldNXDOMAIN:     s.stats.heldNXDOMAIN.Load(),
		RateLimited:      s.stats.rateLimited.Load(),
		Malformed:        s.stats.malformed.Load(),
		TCPRejected:      s.stats.tcpRejected.Load(),
		TCPEvicted:       s.stats.tcpEvicted.Load(),
		TransfersServed:  s.stats.transfersServed.Load(),
		TransfersRefused: s.stats.transfersRefused.Load(),
		NotifiesSent:     s.stats.notifiesSent.Load(),
		Upstreams:        s.fwd.stats(),
	}
	s.stats.mu.Lock()
	for v, m := range s.stats.queries {
		c := make(map[string]uint64, len(m))
		for rc, n := range m {
			c[rc] = n.Load()
		}
		st.Queries[v] = c
	}
	s.stats.mu.Unlock()
	return st
}
