package dnssplit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// tlsUpstream runs a DNS-over-TLS server on loopback with a fresh
// self-signed certificate for "dot.test" and returns its address and a
// client configuration trusting it.
func tlsUpstream(t testing.TB, h dns.HandlerFunc) (netip.AddrPort, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dot.test"},
		DNSNames: []string{"dot.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: l, Net: "tcp-tls", Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return netcore.AddrPort(l.Addr()), &tls.Config{RootCAs: pool}
}

func TestDoTUpstream(t *testing.T) {
	var asked atomic.Int32
	up, cfg := tlsUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		asked.Add(1)
		answerA("198.51.100.53", 60)(w, r)
	})
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up, TLS: true, ServerName: "dot.test", TLSConfig: cfg}}
	addr := start(t, s)
	if got := firstA(query(t, "udp", "127.0.0.2", addr, q("tls.example.net.", dns.TypeA))); got != "198.51.100.53" {
		t.Fatalf("over DoT: %q", got)
	}
	// The wrong name fails verification: no answer, no plaintext fallback.
	s2 := splitServer(t)
	s2.Upstreams = []Upstream{{Addr: up, TLS: true, ServerName: "other.test", TLSConfig: cfg}}
	addr2 := start(t, s2)
	if r := query(t, "udp", "127.0.0.2", addr2, q("tls.example.net.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("certificate for another name accepted: %v", r)
	}
	if asked.Load() != 1 {
		t.Fatalf("upstream asked %d times", asked.Load())
	}
}

func TestTCPFallbackOnTruncation(t *testing.T) {
	var udp, tcp atomic.Int32
	// Over UDP the upstream only ever says "truncated".
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		udp.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		m.Truncated = true
		w.WriteMsg(m)
	})
	// The upstream helper serves UDP only; add TCP on the same port.
	l, err := net.Listen("tcp", up.String())
	if err != nil {
		t.Skipf("tcp port %v taken: %v", up, err)
	}
	srv := &dns.Server{Listener: l, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		tcp.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 198.51.100.54")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	addr := start(t, s)
	if got := firstA(query(t, "udp", "127.0.0.2", addr, q("tc.example.net.", dns.TypeA))); got != "198.51.100.54" {
		t.Fatalf("after TC: %q", got)
	}
	if udp.Load() != 1 || tcp.Load() != 1 {
		t.Fatalf("udp %d tcp %d", udp.Load(), tcp.Load())
	}
}

func TestPolicyFastest(t *testing.T) {
	var slowN, fastN atomic.Int32
	slow, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		slowN.Add(1)
		time.Sleep(30 * time.Millisecond)
		answerA("198.51.100.1", 60)(w, r)
	})
	fast, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		fastN.Add(1)
		answerA("198.51.100.2", 60)(w, r)
	})
	f := newForwarder([]Upstream{{Addr: slow}, {Addr: fast}}, PolicyFastest, time.Second, time.Second, nil)
	// Both start unmeasured; a first round measures them.
	for _, u := range f.ups {
		u.result(0, nil)
	}
	f.ups[0].result(30*time.Millisecond, nil)
	f.ups[1].result(time.Millisecond, nil)
	for range 5 {
		if _, err := f.exchange(t.Context(), dns.Question{Name: "x.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if fastN.Load() != 5 || slowN.Load() != 0 {
		t.Fatalf("fast asked %d, slow %d", fastN.Load(), slowN.Load())
	}
	f.policy = PolicyFailover
	f.exchange(t.Context(), dns.Question{Name: "x.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, false, false)
	if slowN.Load() != 1 {
		t.Fatal("failover did not ask the first upstream")
	}
}

func TestPrefetch(t *testing.T) {
	var n atomic.Int32
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		answerA("198.51.100.3", 100)(w, r)
	})
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	s.Cache.Prefetch = true
	s.init()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s.cache.setClock(func() time.Time { return time.Unix(0, clock.Load()) })
	addr := start(t, s)
	for range prefetchHits + 1 {
		query(t, "udp", "127.0.0.2", addr, q("pop.example.net.", dns.TypeA))
	}
	clock.Add(int64(95 * time.Second)) // within the last 10% of the TTL
	query(t, "udp", "127.0.0.2", addr, q("pop.example.net.", dns.TypeA))
	deadline := time.Now().Add(3 * time.Second)
	for n.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n.Load() != 2 {
		t.Fatalf("upstream asked %d times, want a prefetch", n.Load())
	}
}

func TestPolicyString(t *testing.T) {
	for _, p := range []Policy{PolicyUnknown, PolicyFailover, PolicyFastest} {
		if p != PolicyUnknown {
			if got, err := ParsePolicy(p.String()); err != nil || got != p {
				t.Errorf("%v: %v %v", p, got, err)
			}
		}
	}
	if _, err := ParsePolicy("random"); err == nil {
		t.Error("random accepted")
	}
}

func TestStampedeMerged(t *testing.T) {
	var n atomic.Int32
	release := make(chan struct{})
	up, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		<-release
		answerA("198.51.100.4", 60)(w, r)
	})
	s := splitServer(t)
	s.Upstreams = []Upstream{{Addr: up}}
	addr := start(t, s)
	const clients = 20
	errs := make(chan error, clients)
	for range clients {
		go func() {
			r, err := exchange(t.Context(), "udp", "127.0.0.2", addr, q("stampede.example.net.", dns.TypeA))
			if err == nil && firstA(r) != "198.51.100.4" {
				err = errors.New(r.String())
			}
			errs <- err
		}()
	}
	// Let the queries arrive, then let the upstream answer.
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().CacheMisses < clients && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n.Load() != 1 {
		t.Fatalf("upstream asked %d times for one name", n.Load())
	}
}

// rawUpstream answers each datagram on a loopback socket with reply(query);
// nil sends nothing.
func rawUpstream(t *testing.T, reply func(q []byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := reply(append([]byte(nil), buf[:n]...)); out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return netcore.AddrPort(pc.LocalAddr())
}

func TestUDPRetransmit(t *testing.T) {
	seen := map[uint16]bool{}
	var mu sync.Mutex
	up := rawUpstream(t, func(b []byte) []byte {
		var m dns.Msg
		if m.Unpack(b) != nil {
			return nil
		}
		mu.Lock()
		first := !seen[m.Id]
		seen[m.Id] = true
		mu.Unlock()
		if first {
			return nil // lose the first copy of every query
		}
		r := new(dns.Msg)
		r.SetReply(&m)
		rr, _ := dns.NewRR(m.Question[0].Name + " 60 IN A 198.51.100.20")
		r.Answer = append(r.Answer, rr)
		out, _ := r.Pack()
		return out
	})
	f := newForwarder([]Upstream{{Addr: up}}, PolicyFailover, time.Second, time.Second, nil)
	start := time.Now()
	r, err := f.exchange(t.Context(), dns.Question{Name: "lossy.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, false, false)
	if err != nil || firstA(r) != "198.51.100.20" {
		t.Fatalf("%v %v", r, err)
	}
	// Without the resend the attempt would have failed at the 1 s timeout.
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("answer after %v: the first copy was not lost?", took)
	}
}

func TestGarbageUpstreamFailsOverAtOnce(t *testing.T) {
	garbage := rawUpstream(t, func(b []byte) []byte {
		if len(b) < 2 {
			return nil
		}
		return append(b[:2:2], 0x81, 0x80, 0xff, 0xff, 0xde, 0xad) // right ID, then nonsense
	})
	good, _ := upstream(t, answerA("198.51.100.21", 60))
	f := newForwarder([]Upstream{{Addr: garbage}, {Addr: good}}, PolicyFailover, 2*time.Second, time.Second, nil)
	start := time.Now()
	r, err := f.exchange(t.Context(), dns.Question{Name: "g.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, false, false)
	if err != nil || firstA(r) != "198.51.100.21" {
		t.Fatalf("%v %v", r, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("failover took %v", took)
	}
}
