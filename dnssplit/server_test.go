package dnssplit

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/interop"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// start serves s on loopback UDP and TCP and returns the address (same port for both).
func start(t *testing.T, s *Server) string {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	for range 20 {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no port free for both UDP and TCP")
	}
	done := make(chan error, 2)
	go func() { done <- s.ServePacket(pc) }()
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range 2 {
			if err := <-done; !errors.Is(err, ErrServerClosed) {
				t.Errorf("serve returned %v, want ErrServerClosed", err)
			}
		}
	})
	return pc.LocalAddr().String()
}

// query asks addr from source address from (empty: any) over net ("udp"/"tcp").
func query(t *testing.T, network, from, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	r, err := exchange(t.Context(), network, from, addr, m)
	if err != nil {
		t.Fatalf("%s query %s from %q: %v", network, m.Question[0].Name, from, err)
	}
	return r
}

func exchange(ctx context.Context, network, from, addr string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	if from != "" {
		d := &net.Dialer{Timeout: 3 * time.Second}
		if network == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		} else {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
		}
		c.Dialer = d
	}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	return r, err
}

func q(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// upstream runs a miekg/dns server on loopback with handler h.
func upstream(t testing.TB, h dns.HandlerFunc) (netip.AddrPort, func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			srv.Shutdown()
			<-done
		}
	}
	t.Cleanup(stop)
	return netcore.AddrPort(pc.LocalAddr()), stop
}

func answerA(ip string, ttl uint32) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " IN A " + ip)
			rr.Header().Ttl = ttl
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	}
}

func splitServer(t testing.TB) *Server {
	t.Helper()
	inside, outside := new(Records), new(Records)
	if err := inside.AddString("blog.example.com. 300 IN A 192.168.1.20", "blog.example.com. 300 IN AAAA 2001:db8::20"); err != nil {
		t.Fatal(err)
	}
	if err := outside.AddString("blog.example.com. 300 IN A 203.0.113.1"); err != nil {
		t.Fatal(err)
	}
	outside.AddZone("example.com.")
	return &Server{
		Views: []*View{
			{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Recursion: true, Records: inside},
			{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, Records: outside},
		},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")},
	}
}

func firstA(m *dns.Msg) string {
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

func TestServerViews(t *testing.T) {
	up, _ := upstream(t, answerA("198.51.100.1", 300))
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	addr := start(t, s)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			in := query(t, network, "127.0.0.2", addr, q("blog.example.com.", dns.TypeA))
			if firstA(in) != "192.168.1.20" || !in.Authoritative {
				t.Fatalf("inside got %v", in)
			}
			out := query(t, network, "127.0.0.1", addr, q("blog.example.com.", dns.TypeA))
			if firstA(out) != "203.0.113.1" || !out.Authoritative {
				t.Fatalf("outside got %v", out)
			}
			// Outside: NXDOMAIN with SOA inside the zone, REFUSED outside it.
			nx := query(t, network, "127.0.0.1", addr, q("nope.example.com.", dns.TypeA))
			if nx.Rcode != dns.RcodeNameError || len(nx.Ns) != 1 || !nx.Authoritative {
				t.Fatalf("outside nxdomain: %v", nx)
			}
			ref := query(t, network, "127.0.0.1", addr, q("www.example.net.", dns.TypeA))
			if ref.Rcode != dns.RcodeRefused || len(ref.Answer) != 0 {
				t.Fatalf("outside recursion: %v", ref)
			}
			// Inside: forwarded.
			fw := query(t, network, "127.0.0.2", addr, q("www.example.net.", dns.TypeA))
			if firstA(fw) != "198.51.100.1" || !fw.RecursionAvailable || fw.Authoritative {
				t.Fatalf("inside recursion: %v", fw)
			}
		})
	}
	st := s.Stats()
	if st.Queries["inside"]["NOERROR"] != 4 || st.Queries["outside"]["REFUSED"] != 2 || st.Queries["outside"]["NXDOMAIN"] != 2 {
		t.Fatalf("stats %+v", st.Queries)
	}
	if st.CacheHits != 1 || st.CacheMisses != 1 {
		t.Fatalf("cache hits %d misses %d, want 1 and 1", st.CacheHits, st.CacheMisses)
	}
}

func TestClientSubnet(t *testing.T) {
	s := splitServer(t)
	addr := start(t, s)
	ecs := func() *dns.Msg {
		m := q("blog.example.com.", dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.ParseIP("127.0.0.2").To4()})
		return m
	}
	if got := firstA(query(t, "udp", "127.0.0.1", addr, ecs())); got != "203.0.113.1" {
		t.Fatalf("ECS from an untrusted sender chose the inside view: %s", got)
	}
	r := query(t, "udp", "127.0.0.3", addr, ecs())
	if got := firstA(r); got != "192.168.1.20" {
		t.Fatalf("ECS from trusted proxy: %s", got)
	}
	if p, _ := clientSubnet(r); !p.IsValid() {
		t.Fatal("reply does not echo the client subnet")
	}
	if c := s.Explain(netip.MustParseAddr("127.0.0.2"), netip.Addr{}); c.View.Name != "inside" || !strings.Contains(c.String(), "127.0.0.2/32") {
		t.Fatalf("explain: %v", c)
	}
}

func TestSplitTypes(t *testing.T) {
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN AAAA 2001:db8::99")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	s.Views[0].SplitTypes = []uint16{dns.TypeA}
	addr := start(t, s)
	r := query(t, "udp", "127.0.0.2", addr, q("blog.example.com.", dns.TypeAAAA))
	if len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "2001:db8::99" {
		t.Fatalf("AAAA was not passed through: %v", r)
	}
	if got := firstA(query(t, "udp", "127.0.0.2", addr, q("blog.example.com.", dns.TypeA))); got != "192.168.1.20" {
		t.Fatalf("A: %s", got)
	}
}

func TestFailoverAndValidation(t *testing.T) {
	var servfails, garbage atomic.Int32
	bad1, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		servfails.Add(1)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	bad2, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		garbage.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR("evil.example. 60 IN A 6.6.6.6") // not what was asked
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	good, _ := upstream(t, answerA("198.51.100.7", 60))
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: bad1}, {Addr: bad2}, {Addr: good}}
	s.Cache.Disabled = true
	addr := start(t, s)
	for i := range 4 {
		r := query(t, "udp", "127.0.0.2", addr, q("x"+string(rune('a'+i))+".example.net.", dns.TypeA))
		if firstA(r) != "198.51.100.7" {
			t.Fatalf("query %d: %v", i, r)
		}
	}
	// After two failures each, the bad upstreams are marked down and skipped.
	if servfails.Load() != downAfter || garbage.Load() != downAfter {
		t.Fatalf("bad upstreams asked %d and %d times, want %d each", servfails.Load(), garbage.Load(), downAfter)
	}
	st := s.Stats()
	if !st.Upstreams[0].Down || !st.Upstreams[1].Down || st.Upstreams[2].Down || st.Upstreams[2].Answers != 4 {
		t.Fatalf("upstream stats %+v", st.Upstreams)
	}
}

func TestServeStaleAndHoldNXDOMAIN(t *testing.T) {
	var nx atomic.Bool
	up, stop := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if nx.Load() {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("io. 60 IN SOA a. b. 1 2 3 4 60")
			m.Ns = append(m.Ns, soa)
		} else {
			rr, _ := dns.NewRR(r.Question[0].Name + " 10 IN A 198.51.100.8")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	s.UpstreamTimeout = 300 * time.Millisecond
	s.Cache.HoldNXDOMAIN = true
	s.init()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s.cache.setClock(func() time.Time { return time.Unix(0, clock.Load()) })
	addr := start(t, s)
	advance := func(d time.Duration) {
		clock.Add(int64(d))
	}
	if got := firstA(query(t, "udp", "127.0.0.2", addr, q("a.io.", dns.TypeA))); got != "198.51.100.8" {
		t.Fatalf("first: %s", got)
	}
	// The TLD goes bad: a sudden NXDOMAIN is held back.
	advance(20 * time.Second)
	nx.Store(true)
	r := query(t, "udp", "127.0.0.2", addr, q("a.io.", dns.TypeA))
	if firstA(r) != "198.51.100.8" || r.Answer[0].Header().Ttl != staleTTL {
		t.Fatalf("NXDOMAIN not held: %v", r)
	}
	// The upstream dies: stale answers.
	stop()
	if got := firstA(query(t, "tcp", "127.0.0.2", addr, q("a.io.", dns.TypeA))); got != "198.51.100.8" {
		t.Fatalf("stale: %q", got)
	}
	r = query(t, "udp", "127.0.0.2", addr, q("never.io.", dns.TypeA))
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("uncached name with no upstream: %v", r)
	}
	st := s.Stats()
	if st.StaleServed != 2 || st.HeldNXDOMAIN != 1 || st.UpstreamFailures != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Past the stale window the answer is gone.
	advance(defaultStaleFor)
	if r := query(t, "udp", "127.0.0.2", addr, q("a.io.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("beyond stale window: %v", r)
	}
}

func TestPersistedCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.json")
	up, stop := upstream(t, answerA("198.51.100.9", 1))
	s1 := splitServer(t)
	s1.Upstreams = []Upstream{{Addr: up}}
	s1.Cache.PersistPath = path
	addr1 := start(t, s1)
	if got := firstA(query(t, "udp", "127.0.0.2", addr1, q("p.example.net.", dns.TypeA))); got != "198.51.100.9" {
		t.Fatal(got)
	}
	if err := s1.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop()
	s2 := splitServer(t)
	s2.Upstreams = []Upstream{{Addr: up}}
	s2.UpstreamTimeout = 200 * time.Millisecond
	s2.Cache.PersistPath = path
	s2.init()
	// On the cache clock the one-second TTL has run out: the answer must
	// come from stale data.
	s2.cache.mu.Lock()
	s2.cache.setClock(func() time.Time { return time.Now().Add(2 * time.Second) })
	s2.cache.mu.Unlock()
	addr2 := start(t, s2)
	r := query(t, "udp", "127.0.0.2", addr2, q("p.example.net.", dns.TypeA))
	if firstA(r) != "198.51.100.9" || r.Answer[0].Header().Ttl != staleTTL {
		t.Fatalf("after restart: %v", r)
	}
}

func TestTruncation(t *testing.T) {
	recs := new(Records)
	for i := range 40 {
		if err := recs.AddString("big.example.com. 60 IN TXT \"" + strings.Repeat("x", 60) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "\""); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Views: []*View{{Name: "all", Records: recs}}}
	addr := start(t, s)
	r := query(t, "udp", "", addr, q("big.example.com.", dns.TypeTXT))
	if !r.Truncated {
		t.Fatalf("no TC for %d answers over 512-byte UDP", len(r.Answer))
	}
	m := q("big.example.com.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	r = query(t, "udp", "", addr, m)
	r.Compress = true
	if !r.Truncated || r.Len() > defaultUDPSize {
		t.Fatalf("EDNS 4096: TC=%v len %d, want truncation to %d", r.Truncated, r.Len(), defaultUDPSize)
	}
	r = query(t, "tcp", "", addr, q("big.example.com.", dns.TypeTXT))
	if r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("tcp: TC=%v answers %d", r.Truncated, len(r.Answer))
	}
}

func TestANYAndOddQueries(t *testing.T) {
	s := splitServer(t)
	addr := start(t, s)
	// RFC 8482: one RRset (the lowest type) of an existing name, as Knot.
	r := query(t, "udp", "127.0.0.2", addr, q("blog.example.com.", dns.TypeANY))
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeA {
		t.Fatalf("ANY: %v", r)
	}
	r = query(t, "udp", "127.0.0.1", addr, q("example.org.", dns.TypeANY))
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("ANY outside: %v", r)
	}
	m := q("blog.example.com.", dns.TypeA)
	m.Opcode = dns.OpcodeUpdate
	if r := query(t, "udp", "", addr, m); r.Rcode != dns.RcodeNotImplemented {
		t.Fatalf("update: %v", r)
	}
	m = q("blog.example.com.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r := query(t, "udp", "", addr, m); r.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: %v", r)
	}
	if r := query(t, "udp", "", addr, q("blog.example.com.", dns.TypeAXFR)); r.Rcode != dns.RcodeRefused {
		t.Fatalf("AXFR over UDP: %v", r)
	}
}

func TestTCPPipelining(t *testing.T) {
	s := splitServer(t)
	addr := start(t, s)
	c, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 20
	for i := range n {
		m := q("blog.example.com.", dns.TypeA)
		m.Id = uint16(i + 1)
		if err := c.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint16]bool{}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range n {
		r, err := c.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Id] = true
	}
	if len(seen) != n {
		t.Fatalf("got %d distinct replies, want %d", len(seen), n)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	s := splitServer(t)
	s.TCPIdleTimeout = 200 * time.Millisecond
	addr := start(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from an idle connection")
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("idle connection was not closed by the server")
	}
}

func TestRateLimit(t *testing.T) {
	s := splitServer(t)
	s.RateLimit = &RateLimit{PerSecond: 10, Burst: 10}
	s.init()
	frozen := time.Now()
	s.limiter.now = func() time.Time { return frozen } // no refill: exactly the burst passes
	addr := start(t, s)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 200
	m := q("blog.example.com.", dns.TypeA)
	b, _ := m.Pack()
	for range sent {
		c.Write(b)
	}
	full, tc := 0, 0
	buf := make([]byte, 1500)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		var r dns.Msg
		if r.Unpack(buf[:n]) == nil {
			if r.Truncated {
				tc++
			} else {
				full++
			}
		}
	}
	if full != 10 {
		t.Fatalf("%d full answers to a flood of %d, want about 10", full, sent)
	}
	if tc == 0 {
		t.Fatal("no slipped (TC) answers")
	}
	if rl := s.Stats().RateLimited; rl > sent-10 || rl < sent/2 { // the kernel may drop some of the flood
		t.Fatalf("rate limited %d", s.Stats().RateLimited)
	}
	// TCP is never limited.
	if r := query(t, "tcp", "", addr, q("blog.example.com.", dns.TypeA)); firstA(r) == "" {
		t.Fatalf("tcp after flood: %v", r)
	}
	t.Logf("flood of %d: %d answered, %d slipped, %d dropped", sent, full, tc, sent-full-tc)
}

func TestMalformed(t *testing.T) {
	s := splitServer(t)
	addr := start(t, s)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff})
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil || r.Id != 0x1234 || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("got %v %v", &r, err)
	}
}

// serveHandler runs s as the dns.Handler of a miekg/dns server on a
// loopback UDP port and returns its address.
func serveHandler(t *testing.T, s *Server) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: s}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done; s.Close() })
	return pc.LocalAddr().String()
}

func TestServeDNSHandler(t *testing.T) {
	addr := serveHandler(t, splitServer(t))
	if got := firstA(query(t, "udp", "127.0.0.2", addr, q("blog.example.com.", dns.TypeA))); got != "192.168.1.20" {
		t.Fatalf("via dns.Server: %s", got)
	}
}

func TestNoOPTForPlainClients(t *testing.T) {
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.SetEdns0(4096, false)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 198.51.100.5")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	addr := start(t, s)
	for range 2 { // from upstream, then from the cache
		r := query(t, "udp", "127.0.0.2", addr, q("opt.example.net.", dns.TypeA))
		if r.IsEdns0() != nil || firstA(r) != "198.51.100.5" {
			t.Fatalf("a client without EDNS got %v", r)
		}
	}
}

func exchangeTimeout(network, from, addr string, m *dns.Msg, d time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return exchange(ctx, network, from, addr, m)
}

func TestStaleAnswerTimer(t *testing.T) {
	var slow atomic.Bool
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if slow.Load() {
			time.Sleep(2 * time.Second)
		}
		answerA("198.51.100.6", 10)(w, r)
	})
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	s.UpstreamTimeout = 3 * time.Second
	s.Cache.StaleAnswerTimeout = 100 * time.Millisecond
	s.init()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s.cache.setClock(func() time.Time { return time.Unix(0, clock.Load()) })
	addr := start(t, s)
	query(t, "udp", "127.0.0.2", addr, q("slow.example.net.", dns.TypeA))
	clock.Add(int64(time.Minute))
	slow.Store(true)
	begin := time.Now()
	r := query(t, "udp", "127.0.0.2", addr, q("slow.example.net.", dns.TypeA))
	if firstA(r) != "198.51.100.6" || r.Answer[0].Header().Ttl != staleTTL {
		t.Fatalf("got %v", r)
	}
	if took := time.Since(begin); took > 1500*time.Millisecond {
		t.Fatalf("stale answer took %v; the upstream should not have been awaited", took)
	}
}

func TestCachePerView(t *testing.T) {
	var n atomic.Int32
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		answerA("198.51.100.10", 300)(w, r)
	})
	s := splitServer(t)
	s.Views[1].Recursion = true
	s.Upstreams = []Upstream{{Addr: up}}
	addr := start(t, s)
	for _, from := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.1", "127.0.0.1"} {
		query(t, "udp", from, addr, q("shared.example.net.", dns.TypeA))
	}
	if n.Load() != 2 {
		t.Fatalf("upstream asked %d times, want once per view", n.Load())
	}
	if st := s.Stats(); st.CacheHits != 2 || st.CacheEntries != 2 {
		t.Fatalf("hits %d entries %d", st.CacheHits, st.CacheEntries)
	}
}

// TestServeDNSHandlerTSIG: on the dns.Handler path a signed query gets a
// signed reply (the client checks its MAC), an unknown key BADKEY and a
// wrong secret BADSIG, as on the Server's own sockets; dig -y, BIND's
// signer, too. Before, the signed query was answered unsigned.
func TestServeDNSHandlerTSIG(t *testing.T) {
	s := splitServer(t)
	s.Transfer = &Transfer{TSIG: map[string]string{"handler-key.": testSecret}}
	addr := serveHandler(t, s)
	ask := func(key, secret string) (*dns.Msg, error) {
		m := q("blog.example.com.", dns.TypeA)
		m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
		c := &dns.Client{TsigSecret: map[string]string{key: secret}, Timeout: 3 * time.Second}
		r, _, err := c.Exchange(m, addr)
		return r, err
	}
	r, err := ask("handler-key.", testSecret)
	if err != nil {
		t.Fatalf("signed query: %v", err) // the client verifies the reply's TSIG
	}
	if r.IsTsig() == nil || firstA(r) != "203.0.113.1" {
		t.Errorf("signed query: reply %v", r)
	}
	for _, c := range []struct {
		name, key, secret string
		want              uint16
	}{
		{"unknown key", "other-key.", testSecret, dns.RcodeBadKey},
		{"wrong secret", "handler-key.", "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==", dns.RcodeBadSig},
	} {
		r, _ := ask(c.key, c.secret)
		if r == nil || r.Rcode != dns.RcodeNotAuth || r.IsTsig() == nil || r.IsTsig().Error != c.want {
			t.Errorf("%s: reply %v, want NOTAUTH with TSIG error %s", c.name, r, dns.RcodeToString[int(c.want)])
		}
	}
	t.Run("dig -y", func(t *testing.T) {
		dig := interop.Need(t, "dig")["dig"]
		_, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command(dig, "-p", port, "@127.0.0.1", "-y", "hmac-sha256:handler-key:"+testSecret,
			"+tries=1", "+time=3", "blog.example.com", "A").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "status: NOERROR") || !strings.Contains(string(out), "203.0.113.1") ||
			!strings.Contains(string(out), "handler-key.") || strings.Contains(string(out), "failed") {
			t.Errorf("dig -y through the handler: %v\n%s", err, out)
		}
	})
}

// TestShutdownWhileServeStarts: Shutdown racing a ServePacket and a Serve
// that are just starting must either stop them or be seen by them; Serve
// returns ErrServerClosed either way. Under -race, a sequence where Serve
// counted itself after Shutdown's wait had found nothing (the bug this
// guards against) is reported as a race on the WaitGroup.
func TestShutdownWhileServeStarts(t *testing.T) {
	for range 200 {
		s := &Server{}
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 2)
		go func() { done <- s.ServePacket(pc) }()
		go func() { done <- s.Serve(l) }()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := <-done; !errors.Is(err, ErrServerClosed) {
				t.Fatalf("serve returned %v, want ErrServerClosed", err)
			}
		}
	}
}
