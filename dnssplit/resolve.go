package dnssplit

import (
	"context"
	"net/netip"

	"github.com/miekg/dns"
)

// Resolve answers one parsed query from client and returns the reply, or nil
// when nothing must be sent (a response, or a rate-limited client). tcp says
// whether the query came over a stream (no truncation, no rate limit). It is
// the whole decision of the server without any socket, safe for concurrent use.
func (s *Server) Resolve(ctx context.Context, req *dns.Msg, client Client, tcp bool) *dns.Msg {
	m, _ := s.resolve(ctx, req, client, tcp, pass{})
	return m
}

// pass is the state of one query on the UDP path, given to resolve as a
// parameter (never through the context).
type pass struct {
	inline  bool // answering on the reader goroutine: never wait on the network
	charged bool // the rate limit was applied already, with verdict limit
	limit   limitVerdict
	// reply, when large enough, receives a reply from the answer cache:
	// the query's own buffer, read before it is overwritten.
	reply []byte
	// chosen: the answer cache chose the view already (choice, for a
	// client without a client subnet, from the views of generation gen),
	// so a query it misses does not choose again.
	chosen bool
	choice Choice
	gen    uint64
}

// outcome is what resolve reports besides the reply.
type outcome struct {
	// needsUpstream: an inline query whose answer must wait on an
	// upstream. Nothing was answered; resolve it again off the reader
	// goroutine, with charged carried over.
	needsUpstream bool
	charged       bool // the rate limit was applied to this query
	// static: the reply is a function of the query's bytes (all but the
	// ID), the view and recurse, and the view's records (and, with entry
	// set, of that fresh cache entry and its age): no client-specific
	// option, no TSIG. Its packed form may be cached.
	static  bool
	entry   *cacheEntry
	age     uint32
	view    *View
	index   int // of view in the views
	recurse bool
	rcode   int
	records uint64 // view.Records.gen before the answer was made
	gen     uint64 // answers.gen before the view was chosen
}

// resolve is Resolve for the server's own pipelines.
func (s *Server) resolve(ctx context.Context, req *dns.Msg, client Client, tcp bool, ps pass) (*dns.Msg, outcome) {
	s.init()
	oc := outcome{charged: ps.charged}
	if req.Response {
		return nil, oc
	}
	reply := func(rcode int) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		m.RecursionDesired = req.RecursionDesired
		return m
	}
	if req.Opcode != dns.OpcodeQuery {
		s.stats.count("", dns.RcodeNotImplemented)
		return s.finish(req, reply(dns.RcodeNotImplemented), tcp), oc
	}
	if len(req.Question) != 1 || optCount(req) > 1 {
		// More than one OPT is a format error too (RFC 6891 section
		// 6.1.1); the reply has no OPT then, as BIND's and Knot's.
		s.stats.count("", dns.RcodeFormatError)
		m := new(dns.Msg)
		m.SetRcodeFormatError(req)
		m.Question = req.Question
		m.Compress = true
		return m, oc
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		m := reply(dns.RcodeBadVers)
		s.stats.count("", dns.RcodeBadVers)
		return s.finish(req, m, tcp), oc
	}
	cookie, verdict := s.checkCookie(req, client.Source)
	if verdict == cookieBadForm {
		m := new(dns.Msg)
		m.SetRcodeFormatError(req)
		s.stats.count("", dns.RcodeFormatError)
		return s.finish(req, m, tcp), oc
	}
	q := req.Question[0]
	subnet, _ := clientSubnet(req)
	if subnet.Bits() == 0 {
		// SOURCE PREFIX-LENGTH 0: the client asks that its address not
		// be used (RFC 7871 section 7.1.2); the answer's scope stays 0.
		subnet = netip.Prefix{}
	}
	client.Subnet = subnet
	var choice Choice
	if ps.chosen && !subnet.IsValid() {
		oc.gen, choice = ps.gen, ps.choice // the same client the answer cache saw
	} else {
		oc.gen = s.answers.gen.Load()
		choice = SelectView(s.views(), s.TrustedProxies, client)
	}
	v := choice.View
	if v != nil && v.Records != nil {
		oc.records = v.Records.gen.Load()
	}
	viewName := ""
	if v != nil {
		viewName = v.Name
	}

	if !tcp && s.limiter != nil && verdict != cookieValid {
		lv := ps.limit
		if !ps.charged {
			oc.charged = true
			lv = s.limiter.allow(client.Source)
		}
		switch lv {
		case limitDrop:
			s.stats.rateLimited.Add(1)
			return nil, oc
		case limitSlip:
			s.stats.rateLimited.Add(1)
			m := reply(dns.RcodeSuccess)
			m.Truncated = true
			return s.finish(req, m, tcp, cookieOpt(cookie)...), oc
		}
	}

	// Recursion is for the networks a view lists: a client that only fell
	// to the last view by default gets its local data, never recursion, so
	// a lone recursive "inside" view is not an open resolver.
	recurse := v != nil && v.Recursion && choice.Reason != ReasonDefault
	m, ede, needsUpstream, from := s.answer(ctx, req, q, v, client.Source, recurse, ps.inline)
	if needsUpstream {
		oc.needsUpstream = true
		return nil, oc // to be answered again off the reader goroutine
	}
	s.stats.count(viewName, m.Rcode)
	if m.Rcode == dns.RcodeRefused {
		s.logger().Debug("dnssplit: refused", "client", client.Source, "view", viewName, "name", q.Name,
			"type", dns.TypeToString[q.Qtype], "reason", choice.String())
	}
	opts := cookieOpt(cookie)
	if ede != nil {
		opts = append(opts, ede)
	}
	var scope uint8
	if choice.Reason == ReasonClientSubnet || (subnet.IsValid() && choice.Reason == ReasonDefault && !choice.SubnetIgnored) {
		scope = subnetScope(s.views(), choice.Address)
	}
	// IXFR is not: whether its SOA is given depends on the client address.
	// A forwarded answer is when it is a fresh cache entry's, as a whole
	// (not a local CNAME completed upstream), and not truncated: its TTLs
	// then age with the entry, and the entry's end ends it.
	m = s.finishScoped(req, m, tcp, scope, opts...)
	if (!from.forwarded || from.entry != nil && !m.Truncated) && !tcp && q.Qtype != dns.TypeIXFR && m.Rcode != dns.RcodeRefused && cookie == nil && ede == nil && scope == 0 && choice.Reason != ReasonClientSubnet && !choice.SubnetIgnored {
		if opt := req.IsEdns0(); opt == nil || len(opt.Option) == 0 {
			oc.static, oc.view, oc.index, oc.recurse, oc.rcode = true, v, choice.Index, recurse, m.Rcode
			oc.entry, oc.age = from.entry, from.age
		}
	}
	return m, oc
}

func cookieOpt(c *dns.EDNS0_COOKIE) []dns.EDNS0 {
	if c == nil {
		return nil
	}
	return []dns.EDNS0{c}
}

// prohibited is the Extended DNS Error (RFC 8914) of a query refused by
// policy: recursion for a client not allowed it, a transfer from a
// secondary not listed. It tells operators why, as BIND's replies do.
func prohibited() *dns.EDNS0_EDE {
	return &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeProhibited}
}

// answerSource says where an answer came from.
type answerSource struct {
	forwarded bool // an upstream's answer is in it (perhaps from the cache)
	// entry, when set: the answer's records are exactly those of this
	// fresh cache entry, TTLs aged by age seconds (see cached).
	entry *cacheEntry
	age   uint32
}

// answer decides the reply to a well-formed single-question query from src
// in view v; recurse says whether the client may have other names
// forwarded; inline that it must not wait on the network. ede is an
// Extended DNS Error to add, or nil; needsUpstream reports an inline query
// left unanswered because it must wait on an upstream; from says where the
// answer came from.
func (s *Server) answer(ctx context.Context, req *dns.Msg, q dns.Question, v *View, src netip.Addr, recurse, inline bool) (m *dns.Msg, ede *dns.EDNS0_EDE, needsUpstream bool, from answerSource) {
	m = new(dns.Msg)
	m.SetReply(req)
	// Clients of a recursive view may recurse, whatever this answer is;
	// stub resolvers look at RA.
	m.RecursionAvailable = recurse && len(s.Upstreams) > 0
	if q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		return m, nil, false, answerSource{}
	}
	switch q.Qtype {
	case dns.TypeIXFR:
		// IXFR over UDP from a secondary allowed to transfer: the current
		// SOA alone tells it to retry over TCP (RFC 1995 section 2), as
		// BIND answers. Others are refused, as for the transfer itself.
		if s.transferAllowed(src) && v != nil && v.Records != nil {
			if soa, ok := v.Records.SOA(q.Name); ok {
				m.Answer = []dns.RR{soa}
				return m, nil, false, answerSource{}
			}
		}
		m.Rcode = dns.RcodeRefused
		return m, prohibited(), false, answerSource{}
	case dns.TypeAXFR:
		// Transfers run on TCP through serveTransfer; anything reaching here
		// (UDP, or the dns.Handler path) is refused.
		m.Rcode = dns.RcodeRefused
		return m, prohibited(), false, answerSource{}
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeMAILA, dns.TypeMAILB:
		m.Rcode = dns.RcodeFormatError
		return m, nil, false, answerSource{}
	}
	var local Answer
	splits := false
	if v != nil && v.Records != nil {
		local = v.Records.Lookup(q.Name, q.Qtype)
		splits = v.splits(q.Qtype)
	}
	if q.Qtype == dns.TypeANY && local.Local && !local.Referral && len(local.Answer) > 0 {
		// RFC 8482 section 4.1: one RRset of an existing name (the lowest
		// type), so ANY cannot amplify; over TCP too, as Knot answers.
		// Names without data get the normal NXDOMAIN or NODATA below.
		// Under a DNAME the DNAMEs and CNAMEs of the chain stay, and the
		// rule applies at its end (as Knot answers).
		from := 0
		if local.viaDNAME {
			for i, rr := range local.Answer {
				if t := rr.Header().Rrtype; t == dns.TypeCNAME || t == dns.TypeDNAME {
					from = i + 1
				}
			}
		}
		n := from + 1
		for n < len(local.Answer) && local.Answer[n].Header().Rrtype == local.Answer[from].Header().Rrtype {
			n++
		}
		local.Answer = local.Answer[:min(n, len(local.Answer))]
	}
	if q.Qtype == dns.TypeANY && !local.Local {
		// RFC 8482: a minimal answer, so ANY cannot amplify.
		m.Answer = []dns.RR{&dns.HINFO{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeHINFO, Class: dns.ClassINET, Ttl: 3600},
			Cpu: "RFC8482",
		}}
		if !recurse {
			m.Answer = nil
			m.Rcode = dns.RcodeRefused
			return m, prohibited(), false, answerSource{}
		}
		return m, nil, false, answerSource{}
	}
	if local.Referral && recurse && len(s.Upstreams) > 0 {
		local = Answer{} // delegated away: a recursive client wants the child's answer
	}
	if local.Local && splits {
		m.Authoritative = !local.Referral
		m.Rcode = local.Rcode
		m.Answer = local.Answer
		m.Ns = local.Ns
		m.Extra = local.Extra
		// Only the first CNAME target may need recursion; an answer that
		// ends in a CNAME pointing outside our data is completed upstream
		// for clients allowed to recurse.
		if n := len(m.Answer); n > 0 && q.Qtype != dns.TypeCNAME && recurse && len(s.Upstreams) > 0 {
			if c, ok := m.Answer[n-1].(*dns.CNAME); ok {
				sub := new(dns.Msg)
				sub.SetQuestion(c.Target, q.Qtype)
				up, _, wait, _, _ := s.forward(ctx, v, sub, req, inline)
				if wait {
					return nil, nil, true, answerSource{forwarded: true}
				}
				if up != nil && up.Rcode == dns.RcodeSuccess {
					m.Answer = append(m.Answer, up.Answer...)
				}
				return m, nil, false, answerSource{forwarded: true}
			}
		}
		return m, nil, false, answerSource{}
	}
	// Pass-through types for names in the local data are forwarded for every
	// client: they concern our own names, so this is not open recursion.
	if local.Local || recurse {
		if len(s.Upstreams) == 0 {
			if local.Local {
				m.Authoritative = !local.Referral
				m.Rcode = local.Rcode
				m.Answer, m.Ns, m.Extra = local.Answer, local.Ns, local.Extra
				return m, nil, false, answerSource{}
			}
			m.Rcode = dns.RcodeServerFailure
			return m, nil, false, answerSource{}
		}
		up, stale, wait, entry, age := s.forward(ctx, v, req, req, inline)
		if wait {
			return nil, nil, true, answerSource{forwarded: true}
		}
		if up == nil {
			m.Rcode = dns.RcodeServerFailure
			return m, nil, false, answerSource{forwarded: true}
		}
		if stale {
			// RFC 8914 Stale Answer, as unbound marks serve-stale replies.
			ede = &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer}
		}
		m.Rcode = up.Rcode
		m.Answer, m.Ns, m.Extra = up.Answer, up.Ns, up.Extra
		// AD only for clients that asked for it (RFC 6840 section 5.8).
		opt := req.IsEdns0()
		m.AuthenticatedData = up.AuthenticatedData && (req.AuthenticatedData || opt != nil && opt.Do())
		return m, ede, false, answerSource{forwarded: true, entry: entry, age: age}
	}
	m.Rcode = dns.RcodeRefused
	return m, prohibited(), false, answerSource{}
}

// finish adds EDNS and truncates UDP replies to the client's buffer size.
func (s *Server) finish(req, m *dns.Msg, tcp bool, opts ...dns.EDNS0) *dns.Msg {
	return s.finishScoped(req, m, tcp, 0, opts...)
}

// finishScoped is finish with the scope prefix length of the echoed client
// subnet (RFC 7871): how far the answer depends on the client's network.
func (s *Server) finishScoped(req, m *dns.Msg, tcp bool, scope uint8, opts ...dns.EDNS0) *dns.Msg {
	m.Compress = true
	// Drop any OPT copied from upstream data; ours (if the client spoke
	// EDNS) is the only one.
	extra := m.Extra[:0:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	if opt := req.IsEdns0(); opt != nil {
		rcode := m.Rcode
		m.SetEdns0(uint16(s.udpSize()), opt.Do())
		if rcode > 0xF {
			m.IsEdns0().SetExtendedRcode(uint16(rcode))
		}
		if p, e := clientSubnet(req); p.IsValid() && e != nil {
			// Echo the client subnet with the scope the view choice
			// gives (0 when the subnet did not choose it).
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{
				Code: dns.EDNS0SUBNET, Family: e.Family, SourceNetmask: e.SourceNetmask, SourceScope: scope, Address: e.Address,
			})
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, opts...)
	}
	truncate(m, s.replyLimit(req, tcp))
	return m
}

// replyLimit is the largest reply to req: the client's EDNS buffer size
// (512 without EDNS) bounded by UDPSize, or 64 KiB over TCP.
func (s *Server) replyLimit(req *dns.Msg, tcp bool) int {
	if tcp {
		return dns.MaxMsgSize
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	return min(size, s.udpSize())
}

// truncate makes m fit in size bytes as BIND and Knot do: the additional
// section goes first (it is optional); if the answer and authority still
// do not fit, TC is set and both are emptied, so the client never caches a
// partial RRset and retries over TCP. The OPT record stays.
func truncate(m *dns.Msg, size int) {
	if m.Len() <= size {
		return
	}
	opts := m.Extra[:0:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opts = append(opts, rr)
		}
	}
	m.Extra = opts
	if m.Len() <= size {
		return
	}
	m.Truncated = true
	m.Answer, m.Ns = nil, nil
}

// Explain says which view a client at addr (arriving on local, which may be
// the zero Addr) gets and why.
func (s *Server) Explain(addr, local netip.Addr) Choice {
	return SelectView(s.views(), s.TrustedProxies, Client{Source: addr, Local: local})
}

// optCount counts the OPT records of a message.
func optCount(m *dns.Msg) int {
	n := 0
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			n++
		}
	}
	return n
}
