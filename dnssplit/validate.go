package dnssplit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// errBadAnswer marks an upstream answer that is not an answer to our query
// (wrong ID or question, unparsable): the upstream is broken or spoofed, and
// it counts against the upstream's health.
var errBadAnswer = errors.New("dnssplit: upstream answer failed validation")

// errUpstreamRcode marks a well-formed answer whose rcode is of no use
// (SERVFAIL, REFUSED, ...): the next upstream is tried, but the upstream is
// alive and this does not count against its health, since any client that
// may recurse can ask for a name that fails everywhere.
var errUpstreamRcode = errors.New("dnssplit: upstream rcode")

// validate checks an upstream answer against the query: ID, response flag,
// question and a usable rcode. What the answer contains is scrub's job.
func validate(q, r *dns.Msg) error {
	if r.Id != q.Id || !r.Response {
		return fmt.Errorf("%w: id or response flag", errBadAnswer)
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || r.Question[0].Qclass != q.Question[0].Qclass {
		return fmt.Errorf("%w: question differs", errBadAnswer)
	}
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return fmt.Errorf("%w %s", errUpstreamRcode, dns.RcodeToString[r.Rcode])
	}
	return nil
}

// maxChain bounds the CNAME chain kept from an upstream answer, as BIND and
// Knot bound the chains they follow (16 and 20 links); it also bounds the
// work scrub does for a hostile answer.
const maxChain = 16

// scrub keeps of an upstream answer to q only what a stub client needs and
// the upstream may speak for, and returns it with the number of records
// dropped:
//
//   - answer: the records of the chain from q's name: CNAMEs (at most
//     maxChain links, loops cut), DNAMEs (RFC 6672) owned by an ancestor of a
//     chain name, the RRset of q's type at chain names, and their RRSIGs if
//     do; records for other names or types are dropped;
//   - authority: for a negative answer, the SOA of a zone that contains the
//     chain's last name, and, if do, NSEC/NSEC3/RRSIG proofs; nothing else
//     (out-of-bailiwick NS and SOA records never reach clients);
//   - additional: nothing (the OPT is ours; glue and addresses from an
//     upstream are exactly what cache poisoning plants);
//   - every TTL capped at maxTTL, as the cache caps how long it keeps an answer.
//
// An answer section of which nothing belongs to the chain is not an answer
// to q: scrub returns errBadAnswer for it. r is modified in place.
func scrub(q dns.Question, r *dns.Msg, do bool, maxTTL time.Duration) (*dns.Msg, int, error) {
	before := len(r.Answer) + len(r.Ns) + len(r.Extra)
	if r.IsEdns0() != nil {
		before-- // not dropped: replaced by ours
	}
	byOwner := make(map[string][]int, len(r.Answer))
	for i, rr := range r.Answer {
		h := rr.Header()
		if h.Class != q.Qclass {
			continue
		}
		n := dns.CanonicalName(h.Name)
		byOwner[n] = append(byOwner[n], i)
	}
	keep := make([]bool, len(r.Answer))
	chain := []string{dns.CanonicalName(q.Name)}
	seen := map[string]bool{chain[0]: true}
	for i := 0; i < len(chain); i++ {
		name := chain[i]
		var next string
		for _, j := range byOwner[name] {
			switch rr := r.Answer[j].(type) {
			case *dns.CNAME:
				if q.Qtype == dns.TypeCNAME || q.Qtype == dns.TypeANY {
					keep[j] = true
				} else if next == "" {
					keep[j] = true // one CNAME per name: a second is bogus
					next = dns.CanonicalName(rr.Target)
				}
			case *dns.RRSIG:
				keep[j] = do
			default:
				keep[j] = r.Answer[j].Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY
			}
		}
		if next != "" && !seen[next] && len(chain) <= maxChain {
			seen[next] = true
			chain = append(chain, next)
		}
	}
	// A DNAME comes before the CNAME it synthesized (RFC 6672 section 3.4);
	// it is valid when it owns a proper ancestor of a name of the chain.
	for j, rr := range r.Answer {
		d, ok := rr.(*dns.DNAME)
		if !ok || d.Hdr.Class != q.Qclass {
			continue
		}
		owner := dns.CanonicalName(d.Hdr.Name)
		for _, n := range chain {
			if n != owner && dns.IsSubDomain(owner, n) {
				keep[j] = true
				break
			}
		}
		if keep[j] && do {
			for _, k := range byOwner[owner] {
				if sig, ok := r.Answer[k].(*dns.RRSIG); ok && sig.TypeCovered == dns.TypeDNAME {
					keep[k] = true
				}
			}
		}
	}
	if len(r.Answer) > 0 && !slices.Contains(keep, true) {
		return nil, 0, fmt.Errorf("%w: no answer record belongs to %s", errBadAnswer, q.Name)
	}
	answer := r.Answer[:0]
	last := chain[len(chain)-1]
	positive := false
	for j, rr := range r.Answer {
		if !keep[j] {
			continue
		}
		if h := rr.Header(); dns.CanonicalName(h.Name) == last && (h.Rrtype == q.Qtype || q.Qtype == dns.TypeANY) {
			positive = true
		}
		answer = append(answer, rr)
	}
	r.Answer = answer
	ns := r.Ns[:0]
	if !positive || r.Rcode == dns.RcodeNameError {
		for _, rr := range r.Ns {
			h := rr.Header()
			switch h.Rrtype {
			case dns.TypeSOA:
				if dns.IsSubDomain(dns.CanonicalName(h.Name), last) {
					ns = append(ns, rr)
				}
			case dns.TypeNSEC, dns.TypeNSEC3, dns.TypeRRSIG:
				if do {
					ns = append(ns, rr)
				}
			}
		}
	} else if do {
		// A positive answer from a wildcard carries its NSEC proof.
		for _, rr := range r.Ns {
			switch rr.Header().Rrtype {
			case dns.TypeNSEC, dns.TypeNSEC3, dns.TypeRRSIG:
				ns = append(ns, rr)
			}
		}
	}
	r.Ns = ns
	r.Extra = nil
	capTTL := uint32(min(maxTTL/time.Second, 1<<31-1))
	for _, sec := range [][]dns.RR{r.Answer, r.Ns} {
		for _, rr := range sec {
			if h := rr.Header(); h.Ttl > capTTL {
				h.Ttl = capTTL
			}
		}
	}
	return r, before - len(r.Answer) - len(r.Ns), nil
}
