package dnssplit

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// hostileUpstream answers every query with its answer plus what a cache
// poisoner adds: records for a name we are authoritative for in every
// section, out-of-bailiwick NS and glue, and a TTL of 2^31-1. For a name
// starting "c." it answers with a CNAME into our local zone and a forged
// address for the target.
func hostileUpstream(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	name := r.Question[0].Name
	rr := func(s string) dns.RR {
		x, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return x
	}
	if strings.HasPrefix(name, "c.") {
		m.Answer = append(m.Answer, rr(name+" 60 IN CNAME blog.example.com."), rr("blog.example.com. 60 IN A 6.6.6.6"))
	} else {
		m.Answer = append(m.Answer, rr(name+" 2147483647 IN A 198.51.100.9"), rr("blog.example.com. 60 IN A 6.6.6.6"))
	}
	m.Ns = append(m.Ns, rr("example.net. 60 IN NS ns.evil.test."), rr("example.com. 60 IN NS ns.evil.test."))
	m.Extra = append(m.Extra, rr("ns.evil.test. 60 IN A 6.6.6.6"), rr("blog.example.com. 60 IN A 6.6.6.6"))
	w.WriteMsg(m)
}

// TestUpstreamAnswersScrubbed: of a hostile upstream's answer only the
// answer chain of the question reaches the client, TTLs are capped as the
// cache caps them, and an upstream CNAME into a local zone is completed
// from the local data. Before scrub existed each of these reached clients.
func TestUpstreamAnswersScrubbed(t *testing.T) {
	up, _ := upstream(t, hostileUpstream)
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	s.Cache.MaxTTL = time.Hour
	addr := start(t, s)

	check := func(r *dns.Msg) {
		t.Helper()
		for _, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
			for _, rr := range sec {
				if a, ok := rr.(*dns.A); ok && a.A.String() == "6.6.6.6" {
					t.Errorf("forged record reached the client: %v", rr)
				}
				if _, ok := rr.(*dns.NS); ok {
					t.Errorf("upstream NS reached the client: %v", rr)
				}
				if rr.Header().Rrtype != dns.TypeOPT && rr.Header().Ttl > uint32(time.Hour/time.Second) {
					t.Errorf("TTL not capped: %v", rr)
				}
			}
		}
	}
	for _, network := range []string{"udp", "tcp"} {
		r := query(t, network, "127.0.0.2", addr, q("x.example.net.", dns.TypeA))
		check(r)
		if len(r.Answer) != 1 || firstA(r) != "198.51.100.9" || len(r.Ns) != 0 {
			t.Fatalf("%s: scrubbed answer %v", network, r)
		}
	}
	// The local name itself still answers from local data, not the cache the
	// upstream tried to fill.
	if got := firstA(query(t, "udp", "127.0.0.2", addr, q("blog.example.com.", dns.TypeA))); got != "192.168.1.20" {
		t.Fatalf("local name after the poisoning attempt: %s", got)
	}
	// An upstream CNAME into the local zone is completed locally.
	r := query(t, "udp", "127.0.0.2", addr, q("c.example.net.", dns.TypeA))
	check(r)
	if len(r.Answer) != 2 || r.Answer[0].Header().Rrtype != dns.TypeCNAME || firstA(r) != "192.168.1.20" {
		t.Fatalf("CNAME into the local zone: %v", r)
	}
	if st := s.Stats(); st.UpstreamScrubbed == 0 {
		t.Fatalf("Stats.UpstreamScrubbed = 0 after scrubbing")
	}
}
