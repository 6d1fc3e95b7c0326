package dnssplit

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/miekg/dns"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==" // base64 of a 28-byte test secret

func transferServer(t *testing.T) *Server {
	t.Helper()
	s := splitServer(t)
	if err := s.Views[1].Records.LoadZone(strings.NewReader(testZone), "example.com.", "test"); err != nil {
		t.Fatal(err)
	}
	s.Transfer = &Transfer{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		TSIG:  map[string]string{"xfr.": testSecret},
	}
	return s
}

func axfr(addr, from, key string) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetAxfr("example.com.")
	tr := &dns.Transfer{}
	if key != "" {
		m.SetTsig("xfr.", dns.HmacSHA256, 300, time.Now().Unix())
		tr.TsigSecret = map[string]string{"xfr.": key}
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tr.Conn = &dns.Conn{Conn: c}
	defer c.Close()
	env, err := tr.In(m, addr)
	if err != nil {
		return nil, err
	}
	var rrs []dns.RR
	for e := range env {
		if e.Error != nil {
			return rrs, e.Error
		}
		rrs = append(rrs, e.RR...)
	}
	return rrs, nil
}

func TestTransferACLAndTSIG(t *testing.T) {
	s := transferServer(t)
	addr := start(t, s)
	rrs, err := axfr(addr, "127.0.0.1", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if len(rrs) < 10 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("AXFR got %d records: %v", len(rrs), rrs)
	}
	for _, rr := range rrs {
		if a, ok := rr.(*dns.A); ok && a.A.String() == "192.168.1.20" && a.Hdr.Name == "blog.example.com." {
			return
		}
	}
	t.Fatalf("zone of the outside view lacks blog: %v", rrs)
}

func TestTransferRefused(t *testing.T) {
	s := transferServer(t)
	addr := start(t, s)
	for _, tt := range []struct{ name, from, key string }{
		{"address not allowed", "127.0.0.2", testSecret},
		{"unsigned", "127.0.0.1", ""},
		{"wrong secret", "127.0.0.1", "d3Jvbmc="},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if rrs, err := axfr(addr, tt.from, tt.key); err == nil {
				t.Fatalf("transfer allowed: %d records", len(rrs))
			}
		})
	}
	if st := s.Stats(); st.TransfersRefused != 3 || st.TransfersServed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKdigAXFR(t *testing.T) {
	p := interop.Need(t, "kdig")
	s := transferServer(t)
	addr := start(t, s)
	host, port, _ := net.SplitHostPort(addr)
	out := run(t, p["kdig"], "-p", port, "@"+host, "-b", "127.0.0.1", "-y", "hmac-sha256:xfr:"+testSecret, "AXFR", "example.com.")
	for _, want := range []string{"blog.example.com.", "192.168.1.20", "_sip._tcp.example.com.", "letsencrypt.org", "NOERROR"} {
		if !strings.Contains(out, want) {
			t.Fatalf("kdig AXFR lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "TSIG") && strings.Contains(out, "failed") {
		t.Fatalf("TSIG failure:\n%s", out)
	}
}

// TestKnotSecondary runs Knot DNS as a secondary of our zone: it transfers the
// zone at start, and follows a NOTIFY after a record is set at run time.
func TestKnotSecondary(t *testing.T) {
	p := interop.Need(t, "knotd")
	dir := t.TempDir()
	knotPort := freePort(t)
	s := transferServer(t)
	s.Transfer.Notify = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(knotPort))}
	s.Transfer.NotifyKey = "xfr"
	addr := start(t, s)
	host, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
log:
  - target: stderr
    any: info
database:
    storage: "%[1]s"
key:
  - id: xfr
    algorithm: hmac-sha256
    secret: %[5]s
remote:
  - id: primary
    address: %[3]s@%[4]s
    key: xfr
acl:
  - id: from_primary
    address: 127.0.0.1
    action: notify
    key: xfr
template:
  - id: default
    storage: "%[1]s"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
zone:
  - domain: example.com
    master: primary
    acl: from_primary
`, dir, knotPort, host, port, testSecret)
	cf := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startPeer(t, p["knotd"], "-c", cf)
	knot := fmt.Sprintf("127.0.0.1:%d", knotPort)
	took := waitAnswer(t, knot, "blog.example.com.", "192.168.1.20", 15*time.Second)
	t.Logf("knot transferred the zone %v after start", took)

	rr, _ := ParseRecord("blog.example.com. 60 IN A 203.0.113.55")
	if err := s.Views[1].Records.Set("blog.example.com.", dns.TypeA, rr); err != nil {
		t.Fatal(err)
	}
	took = waitAnswer(t, knot, "blog.example.com.", "203.0.113.55", 10*time.Second)
	t.Logf("knot followed the NOTIFY in %v", took)
	if st := s.Stats(); st.NotifiesSent < 1 || st.TransfersServed < 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIXFR(t *testing.T) {
	s := transferServer(t)
	s.Transfer.TSIG = nil
	addr := start(t, s)
	soa, _ := s.Views[1].Records.SOA("example.com.")
	ixfr := func(serial uint32) *dns.Msg {
		m := new(dns.Msg)
		m.SetIxfr("example.com.", serial, "ns1.example.com.", "hostmaster.example.com.")
		return query(t, "tcp", "127.0.0.1", addr, m)
	}
	if r := ixfr(soa.Serial); len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != soa.Serial {
		t.Fatalf("IXFR from the current serial: %v", r.Answer)
	}
	if r := ixfr(soa.Serial - 1); len(r.Answer) < 10 || r.Answer[len(r.Answer)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("IXFR from an old serial: %d records", len(r.Answer))
	}
	if !serialLess(0xfffffff0, 5) || serialLess(5, 0xfffffff0) {
		t.Fatal("serial arithmetic does not wrap (RFC 1982)")
	}
}

func TestNotifyAfterSetViews(t *testing.T) {
	got := make(chan string, 10)
	sec, _ := upstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Opcode == dns.OpcodeNotify {
			got <- r.Question[0].Name
		}
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})
	s := transferServer(t)
	s.Transfer.TSIG = nil
	s.Transfer.Notify = []netip.AddrPort{sec}
	start(t, s)
	fresh := new(Records)
	fresh.AddZone("example.org.")
	s.SetViews([]*View{{Name: "all", Records: fresh}})
	select {
	case z := <-got:
		if z != "example.org." {
			t.Fatalf("NOTIFY for %s", z)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NOTIFY after SetViews")
	}
	rr, _ := ParseRecord("a.example.org. A 192.0.2.1")
	fresh.Add(rr)
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no NOTIFY after a change in the new views")
	}
}

// TestKdigAXFRLargeSigned checks TSIG over a transfer of several messages,
// where each message after the first is signed with the previous MAC.
func TestKdigAXFRLargeSigned(t *testing.T) {
	p := interop.Need(t, "kdig")
	s := transferServer(t)
	for i := range 3 * transferChunk {
		if err := s.Views[1].Records.AddString(fmt.Sprintf("h%d.example.com. 60 IN A 192.0.2.%d", i, i%250+1)); err != nil {
			t.Fatal(err)
		}
	}
	addr := start(t, s)
	host, port, _ := net.SplitHostPort(addr)
	out := run(t, p["kdig"], "-p", port, "@"+host, "-b", "127.0.0.1", "-y", "hmac-sha256:xfr:"+testSecret, "AXFR", "example.com.")
	if !strings.Contains(out, "h599.example.com.") || strings.Contains(strings.ToLower(out), "tsig") && strings.Contains(strings.ToLower(out), "fail") {
		t.Fatalf("kdig AXFR:\n%s", out[max(0, len(out)-2000):])
	}
	if !strings.Contains(out, "Received") {
		t.Fatalf("kdig did not complete the transfer:\n%s", out[max(0, len(out)-500):])
	}
	rrs, err := axfr(addr, "127.0.0.1", testSecret)
	if err != nil || len(rrs) < 3*transferChunk {
		t.Fatalf("miekg/dns AXFR: %d records, %v", len(rrs), err)
	}
}
