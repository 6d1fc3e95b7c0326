package dnssplit

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDoHCanary: a view that recurses answers Firefox's canary
// use-application-dns.net with NXDOMAIN itself, so Firefox keeps using the
// network's resolver (and with it the inside view); ForwardDoHCanary
// forwards it like any other name.
func TestDoHCanary(t *testing.T) {
	var asked atomic.Int32
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		asked.Add(1)
		answerA("198.51.100.10", 60)(w, r)
	})
	for _, forward := range []bool{false, true} {
		asked.Store(0)
		s := splitServer(t)
		s.Upstreams = []Upstream{{Addr: up}}
		s.Cache.Disabled = true
		s.ForwardDoHCanary = forward
		addr := start(t, s)
		for _, network := range []string{"udp", "tcp"} {
			r := query(t, network, "127.0.0.2", addr, q("use-application-dns.net.", dns.TypeA))
			if forward {
				if r.Rcode != dns.RcodeSuccess || firstA(r) != "198.51.100.10" {
					t.Fatalf("ForwardDoHCanary, %s: %v", network, r)
				}
				continue
			}
			if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 || len(r.Question) != 1 || r.Question[0].Name != "use-application-dns.net." {
				t.Fatalf("canary, %s: %v", network, r)
			}
		}
		if want := map[bool]int32{false: 0, true: 2}[forward]; asked.Load() != want {
			t.Fatalf("ForwardDoHCanary=%v: upstream asked %d times, want %d", forward, asked.Load(), want)
		}
		// Other names of the same domain are forwarded either way.
		if got := firstA(query(t, "udp", "127.0.0.2", addr, q("www.use-application-dns.net.", dns.TypeA))); got != "198.51.100.10" {
			t.Fatalf("ForwardDoHCanary=%v: subdomain of the canary: %q", forward, got)
		}
		// A view without recursion refuses it as any name outside its zones.
		if r := query(t, "udp", "127.0.0.1", addr, q("use-application-dns.net.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
			t.Fatalf("ForwardDoHCanary=%v: canary from outside: %v", forward, r)
		}
	}
}

// TestStaleAnswerMarked: an answer served from stale cache data carries
// RFC 8914 EDE 3 (Stale Answer), as unbound marks it; a fresh one does not.
func TestStaleAnswerMarked(t *testing.T) {
	up, stop := upstream(t, answerA("198.51.100.11", 1))
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	s.UpstreamTimeout = 200 * time.Millisecond
	s.init()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s.cache.setClock(func() time.Time { return time.Unix(0, clock.Load()) })
	addr := start(t, s)
	edns := func() *dns.Msg {
		m := q("s.example.net.", dns.TypeA)
		m.SetEdns0(1232, false)
		return m
	}
	ede := func(r *dns.Msg) []uint16 {
		var codes []uint16
		if opt := r.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				if e, ok := o.(*dns.EDNS0_EDE); ok {
					codes = append(codes, e.InfoCode)
				}
			}
		}
		return codes
	}
	r := query(t, "udp", "127.0.0.2", addr, edns())
	if firstA(r) != "198.51.100.11" || len(ede(r)) != 0 {
		t.Fatalf("fresh answer: %v", r)
	}
	stop()
	clock.Add(int64(5 * time.Second))
	for _, network := range []string{"udp", "tcp"} {
		r = query(t, network, "127.0.0.2", addr, edns())
		if got := ede(r); firstA(r) != "198.51.100.11" || len(got) != 1 || got[0] != dns.ExtendedErrorCodeStaleAnswer {
			t.Fatalf("stale answer over %s: EDE %v in %v", network, got, r)
		}
	}
}
