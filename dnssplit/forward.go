package dnssplit

import (
	"context"
	"errors"
	"time"

	"github.com/miekg/dns"
)

// dohCanary is the name Firefox asks before it turns DNS over HTTPS on by
// itself: NXDOMAIN (or no address) means "this network filters or splits
// DNS, keep using it".
const dohCanary = "use-application-dns.net."

// forward answers q (a single-question query) for view v through the cache
// and the upstreams; req supplies the DO and CD bits. It returns nil when
// nothing, not even a stale answer, is available; stale reports that the
// answer is a stale one (RFC 8767), for the Extended DNS Error Stale Answer.
// When inline (the UDP reader must not wait) and the answer needs an
// upstream, it returns needsUpstream instead of asking. The returned message
// is shared: callers must not modify it. entry and age are set when m is a
// fresh cache entry's message aged by age seconds (see cached).
func (s *Server) forward(ctx context.Context, v *View, q, req *dns.Msg, inline bool) (m *dns.Msg, stale, needsUpstream bool, entry *cacheEntry, age uint32) {
	qq := q.Question[0]
	opt := req.IsEdns0()
	k := cacheKey{Name: dns.CanonicalName(qq.Name), Type: qq.Qtype, Class: qq.Qclass,
		DO: opt != nil && opt.Do(), CD: req.CheckingDisabled}
	if v != nil {
		k.View = v.Name
		if v.Recursion && !s.ForwardDoHCanary && k.Name == dohCanary {
			return canaryAnswer(qq), false, false, nil, 0
		}
	}
	got := s.cache.get(k)
	st, positive := got.state, got.positive
	if st == cacheFresh {
		s.stats.cacheHits.Add(1)
		if got.prefetch {
			s.bgWG.Add(1)
			go func() {
				defer s.bgWG.Done()
				defer s.cache.done(k)
				if r, err := s.upstream(s.bgCtx, v, qq, k.DO, k.CD); err == nil {
					s.cache.put(k, r)
				}
			}()
		}
		return got.msg, false, false, got.entry, got.age
	}
	if inline {
		return nil, false, true, nil, 0
	}
	s.stats.cacheMisses.Add(1)
	// fetch asks the upstreams and caches the answer. A sudden NXDOMAIN for
	// a name with a (stale) positive answer may be held back.
	fetch := func(ctx context.Context) (*dns.Msg, error) {
		r, err := s.upstream(ctx, v, qq, k.DO, k.CD)
		if err != nil {
			s.stats.upstreamFailures.Add(1)
			s.logger().Debug("dnssplit: forward", "name", qq.Name, "err", err)
			return nil, err
		}
		if r.Rcode == dns.RcodeNameError && st == cacheStale && positive && s.Cache.HoldNXDOMAIN {
			s.stats.heldNXDOMAIN.Add(1)
			return nil, errHeldNXDOMAIN
		}
		s.cache.put(k, r)
		return r, nil
	}
	if st != cacheStale {
		r, err := s.flight.do(k, func() (*dns.Msg, error) { return fetch(ctx) })
		if err != nil {
			return nil, false, false, nil, 0
		}
		return r, false, false, nil, 0
	}
	// A stale answer is at hand: wait for the upstreams only so long
	// (RFC 8767's client response timer), then answer stale and let the
	// refresh finish in the background.
	ch := make(chan *dns.Msg, 1)
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		r, err := s.flight.do(k, func() (*dns.Msg, error) { return fetch(s.bgCtx) })
		if err != nil {
			r = nil
		}
		ch <- r
	}()
	t := time.NewTimer(s.Cache.staleAnswerTimeout())
	defer t.Stop()
	select {
	case r := <-ch:
		if r != nil {
			return r, false, false, nil, 0
		}
	case <-t.C:
	case <-ctx.Done():
	}
	s.stats.staleServed.Add(1)
	return got.msg, true, false, nil, 0
}

// upstream asks the upstreams for q (whose answers are scrubbed: only the
// answer chain of q, TTLs capped as the cache caps them) and stops the chain
// where it enters view v's own data, completing it from there, so that no
// upstream speaks for a local name.
func (s *Server) upstream(ctx context.Context, v *View, q dns.Question, do, cd bool) (*dns.Msg, error) {
	r, err := s.fwd.exchange(ctx, q, do, cd)
	if err != nil {
		return nil, err
	}
	if v != nil && v.Records != nil {
		r = s.keepLocal(v, q, r)
	}
	return r, nil
}

// keepLocal cuts an upstream answer chain at the first name the view answers
// itself (local data of a type the view splits) and completes it from the
// local data: an upstream CNAME into a local zone does not override the
// local answer.
func (s *Server) keepLocal(v *View, q dns.Question, r *dns.Msg) *dns.Msg {
	if !v.splits(q.Qtype) {
		return r // this type of local names is forwarded anyway
	}
	for i, rr := range r.Answer {
		c, ok := rr.(*dns.CNAME)
		if !ok {
			continue
		}
		local := v.Records.Lookup(c.Target, q.Qtype)
		if !local.Local || local.Referral {
			continue
		}
		s.stats.upstreamLocal.Add(1)
		out := r.Copy()
		out.Answer = append(out.Answer[:i+1:i+1], local.Answer...)
		out.Rcode, out.Ns, out.Extra = local.Rcode, local.Ns, nil
		out.AuthenticatedData = false
		return out
	}
	return r
}

// canaryAnswer is the NXDOMAIN that keeps Firefox on the network's resolver.
func canaryAnswer(q dns.Question) *dns.Msg {
	m := new(dns.Msg)
	m.Question = []dns.Question{q}
	m.Response = true
	m.Rcode = dns.RcodeNameError
	return m
}

// errHeldNXDOMAIN marks an NXDOMAIN answer replaced by the last positive one.
var errHeldNXDOMAIN = errors.New("dnssplit: sudden NXDOMAIN held back")

func (c CacheConfig) staleAnswerTimeout() time.Duration {
	if c.StaleAnswerTimeout > 0 {
		return c.StaleAnswerTimeout
	}
	return defaultStaleAnswerTimeout
}
