package dnssplit

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
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
	StaleServed      uint64 // stale answers served (RFC 8767)
	HeldNXDOMAIN     uint64 // sudden NXDOMAIN answers replaced by the last positive answer
	RateLimited      uint64 // UDP queries dropped or slipped by the rate limit
	Malformed        uint64 // packets that did not parse
	TCPRejected      uint64 // TCP connections closed at the MaxTCPConns bound
	TransfersServed  uint64 // AXFR/IXFR answered
	TransfersRefused uint64 // AXFR/IXFR refused (ACL or TSIG)
	NotifiesSent     uint64 // NOTIFY messages acknowledged by a secondary

	Upstreams []UpstreamStats
}

type stats struct {
	mu      sync.Mutex
	queries map[string]map[string]uint64

	cacheHits, cacheMisses, upstreamFailures, staleServed, heldNXDOMAIN atomic.Uint64
	rateLimited, malformed, tcpRejected                                 atomic.Uint64
	transfersServed, transfersRefused, notifiesSent                     atomic.Uint64
}

func (s *stats) init() { s.queries = make(map[string]map[string]uint64) }

func (s *stats) count(view string, rcode int) {
	name, ok := dns.RcodeToString[rcode]
	if !ok {
		name = "OTHER"
	}
	s.mu.Lock()
	m := s.queries[view]
	if m == nil {
		m = make(map[string]uint64)
		s.queries[view] = m
	}
	m[name]++
	s.mu.Unlock()
}

// Stats returns a snapshot of the counters. It is safe for concurrent use.
func (s *Server) Stats() Stats {
	s.init()
	st := Stats{
		Queries:          make(map[string]map[string]uint64),
		CacheHits:        s.stats.cacheHits.Load(),
		CacheMisses:      s.stats.cacheMisses.Load(),
		CacheEntries:     s.cache.len(),
		UpstreamFailures: s.stats.upstreamFailures.Load(),
		StaleServed:      s.stats.staleServed.Load(),
		HeldNXDOMAIN:     s.stats.heldNXDOMAIN.Load(),
		RateLimited:      s.stats.rateLimited.Load(),
		Malformed:        s.stats.malformed.Load(),
		TCPRejected:      s.stats.tcpRejected.Load(),
		TransfersServed:  s.stats.transfersServed.Load(),
		TransfersRefused: s.stats.transfersRefused.Load(),
		NotifiesSent:     s.stats.notifiesSent.Load(),
		Upstreams:        s.fwd.stats(),
	}
	s.stats.mu.Lock()
	for v, m := range s.stats.queries {
		st.Queries[v] = maps.Clone(m)
	}
	s.stats.mu.Unlock()
	return st
}
