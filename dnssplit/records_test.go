package dnssplit

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const testZone = `$ORIGIN example.com.
$TTL 300
@       IN SOA ns1 hostmaster 2024010101 3600 600 604800 120
@       IN NS  ns1
ns1     IN A   192.168.1.1
blog    IN A   192.168.1.20
www     IN CNAME blog
ext     IN CNAME other.example.net.
*.apps  IN A   192.168.1.30
a.b.c   IN TXT "deep"
_sip._tcp IN SRV 10 5 5060 sip
@       IN MX 10 mail
@       IN CAA 0 issue "letsencrypt.org"
loop1   IN CNAME loop2
loop2   IN CNAME loop1
`

func testRecords(t *testing.T) *Records {
	t.Helper()
	r := new(Records)
	if err := r.LoadZone(strings.NewReader(testZone), "example.com.", "test"); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRecordsLookup(t *testing.T) {
	r := testRecords(t)
	if err := r.AddString("solo.example.org. 60 IN A 10.0.0.1", "*.wild.example.org. IN AAAA fd00::1"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		qtype   uint16
		local   bool
		rcode   int
		answers int
		soa     bool
		first   string
	}{
		{"blog.example.com.", dns.TypeA, true, dns.RcodeSuccess, 1, false, "192.168.1.20"},
		{"BLOG.Example.COM.", dns.TypeA, true, dns.RcodeSuccess, 1, false, "192.168.1.20"},
		{"blog.example.com.", dns.TypeAAAA, true, dns.RcodeSuccess, 0, true, ""},
		{"www.example.com.", dns.TypeA, true, dns.RcodeSuccess, 2, false, "blog.example.com."},
		{"ext.example.com.", dns.TypeA, true, dns.RcodeSuccess, 1, false, "other.example.net."},
		{"x.apps.example.com.", dns.TypeA, true, dns.RcodeSuccess, 1, false, "192.168.1.30"},
		{"y.x.apps.example.com.", dns.TypeA, true, dns.RcodeSuccess, 1, false, "192.168.1.30"},
		{"apps.example.com.", dns.TypeA, true, dns.RcodeSuccess, 0, true, ""}, // empty non-terminal
		{"b.c.example.com.", dns.TypeTXT, true, dns.RcodeSuccess, 0, true, ""},
		{"a.b.c.example.com.", dns.TypeTXT, true, dns.RcodeSuccess, 1, false, "deep"},
		{"nope.example.com.", dns.TypeA, true, dns.RcodeNameError, 0, true, ""},
		{"example.com.", dns.TypeSOA, true, dns.RcodeSuccess, 1, false, "ns1.example.com."},
		{"example.com.", dns.TypeMX, true, dns.RcodeSuccess, 1, false, "mail.example.com."},
		{"example.com.", dns.TypeCAA, true, dns.RcodeSuccess, 1, false, "letsencrypt.org"},
		{"_sip._tcp.example.com.", dns.TypeSRV, true, dns.RcodeSuccess, 1, false, "sip.example.com."},
		{"loop1.example.com.", dns.TypeA, true, dns.RcodeSuccess, 2, false, "loop2.example.com."}, // the loop ends at the first repeat
		{"solo.example.org.", dns.TypeA, true, dns.RcodeSuccess, 1, false, "10.0.0.1"},
		{"solo.example.org.", dns.TypeTXT, true, dns.RcodeSuccess, 0, true, ""},
		{"other.example.org.", dns.TypeA, false, 0, 0, false, ""},
		{"h.wild.example.org.", dns.TypeAAAA, true, dns.RcodeSuccess, 1, false, "fd00::1"},
		{"example.net.", dns.TypeA, false, 0, 0, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			a := r.Lookup(tt.name, tt.qtype)
			if a.Local != tt.local || a.Rcode != tt.rcode || len(a.Answer) != tt.answers {
				t.Fatalf("got local=%v rcode=%d answers=%v", a.Local, a.Rcode, a.Answer)
			}
			hasSOA := len(a.Ns) == 1 && a.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tt.soa {
				t.Fatalf("authority %v, want SOA %v", a.Ns, tt.soa)
			}
			if tt.first != "" && !strings.Contains(a.Answer[0].String(), tt.first) {
				t.Fatalf("first answer %v, want %q", a.Answer[0], tt.first)
			}
			for _, rr := range a.Answer[:min(1, len(a.Answer))] {
				if !strings.EqualFold(rr.Header().Name, tt.name) {
					t.Fatalf("answer owner %s, want %s", rr.Header().Name, tt.name)
				}
			}
		})
	}
}

func TestRecordsSetAndSerial(t *testing.T) {
	r := testRecords(t)
	soa0, _ := r.SOA("example.com.")
	var mu sync.Mutex
	var changed []string
	r.onChange(func(z string) { mu.Lock(); changed = append(changed, z); mu.Unlock() })
	rr, _ := ParseRecord("blog.example.com. 60 IN A 203.0.113.7")
	if err := r.Set("blog.example.com.", dns.TypeA, rr); err != nil {
		t.Fatal(err)
	}
	a := r.Lookup("blog.example.com.", dns.TypeA)
	if len(a.Answer) != 1 || a.Answer[0].(*dns.A).A.String() != "203.0.113.7" {
		t.Fatalf("after Set: %v", a.Answer)
	}
	soa1, _ := r.SOA("example.com.")
	if soa1.Serial != soa0.Serial+1 {
		t.Fatalf("serial %d -> %d, want +1", soa0.Serial, soa1.Serial)
	}
	if len(changed) != 1 || changed[0] != "example.com." {
		t.Fatalf("changed %v", changed)
	}
	if err := r.Set("blog.example.com.", dns.TypeAAAA, rr); err == nil {
		t.Fatal("Set accepted a record of another type")
	}
	if err := r.Set("blog.example.com.", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if a := r.Lookup("blog.example.com.", dns.TypeA); a.Rcode != dns.RcodeNameError {
		t.Fatalf("after removing the only RRset: %+v", a)
	}
	all, _ := r.ZoneRecords("example.com.")
	if all[0].Header().Rrtype != dns.TypeSOA || all[0].(*dns.SOA).Serial != soa0.Serial+2 {
		t.Fatalf("zone records start with %v", all[0])
	}
}

func TestRecordsConcurrent(t *testing.T) {
	r := testRecords(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 200 {
				rr, _ := ParseRecord("dyn.example.com. 60 IN A 10.0.0." + string(rune('0'+(i+j)%10)))
				r.Set("dyn.example.com.", dns.TypeA, rr)
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				a := r.Lookup("dyn.example.com.", dns.TypeA)
				if a.Rcode == dns.RcodeSuccess && len(a.Answer) > 1 {
					t.Error("half-applied RRset")
				}
				r.ZoneRecords("example.com.")
			}
		}()
	}
	wg.Wait()
}

func TestParseRecordErrors(t *testing.T) {
	for _, bad := range []string{"", "blog.example.com. IN A 999.1.1.1", "a. IN A 1.2.3.4\nb. IN A 1.2.3.4", "x. IN BOGUS 1"} {
		if _, err := ParseRecord(bad); err == nil || !strings.HasPrefix(err.Error(), "dnssplit: ") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestSyntheticZone(t *testing.T) {
	r := new(Records)
	r.AddZone("home.arpa")
	if err := r.AddString("nas.home.arpa. A 192.168.1.5"); err != nil {
		t.Fatal(err)
	}
	if a := r.Lookup("home.arpa.", dns.TypeSOA); len(a.Answer) != 1 {
		t.Fatalf("SOA of declared zone: %+v", a)
	}
	if a := r.Lookup("tv.home.arpa.", dns.TypeA); a.Rcode != dns.RcodeNameError || len(a.Ns) != 1 {
		t.Fatalf("NXDOMAIN: %+v", a)
	}
	if a := r.Lookup("nas.home.arpa.", dns.TypeA); len(a.Answer) != 1 || a.Answer[0].Header().Ttl != defaultTTL {
		t.Fatalf("A: %+v", a)
	}
}

func TestZoneFileSerialKept(t *testing.T) {
	r := testRecords(t)
	if soa, _ := r.SOA("example.com."); soa.Serial != 2024010101 {
		t.Fatalf("serial %d, want the zone file's 2024010101", soa.Serial)
	}
}

// An NXDOMAIN or empty-non-terminal answer must not cost a walk over every
// name of the view: anyone can ask for random names under our zones.
func TestNonexistentNameCostIndependentOfSize(t *testing.T) {
	recs := new(Records)
	recs.AddZone("big.example.")
	var rrs []dns.RR
	for i := range 20000 {
		rr, err := dns.NewRR(fmt.Sprintf("h%d.sub.big.example. 60 IN A 192.0.2.1", i))
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	if err := recs.Add(rrs...); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	for i := range 1000 {
		if a := recs.Lookup(fmt.Sprintf("nx%d.big.example.", i), dns.TypeA); a.Rcode != dns.RcodeNameError {
			t.Fatalf("nx%d: %+v", i, a)
		}
	}
	if a := recs.Lookup("sub.big.example.", dns.TypeA); a.Rcode != dns.RcodeSuccess || len(a.Answer) != 0 || len(a.Ns) != 1 {
		t.Fatalf("empty non-terminal: %+v", a)
	}
	if took := time.Since(begin); took > time.Second {
		t.Fatalf("1000 NXDOMAIN lookups in a 20 000-name view took %v", took)
	}
	// Removing the names removes the empty non-terminal with them.
	for i := range 20000 {
		recs.Remove(fmt.Sprintf("h%d.sub.big.example.", i))
	}
	if a := recs.Lookup("sub.big.example.", dns.TypeA); a.Rcode != dns.RcodeNameError {
		t.Fatalf("after removal: %+v", a)
	}
}

// TestRecordsAuthoritative checks, without peers, the answers that
// TestConformance compares with BIND and Knot.
func TestRecordsAuthoritative(t *testing.T) {
	f, err := os.Open(conformanceZoneFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := new(Records)
	if err := r.LoadZone(f, "example.com.", conformanceZoneFile); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		qtype    uint16
		rcode    int
		answers  int
		referral bool
		negTTL   uint32 // TTL of the SOA in authority; 0: no SOA expected
		extra    int
	}{
		{"ent.w.example.com.", dns.TypeA, dns.RcodeSuccess, 0, false, 300, 0},      // empty non-terminal blocks *.w
		{"z.ent.w.example.com.", dns.TypeA, dns.RcodeNameError, 0, false, 300, 0},  // closest encloser ent.w has no wildcard
		{"foo.w.example.com.", dns.TypeA, dns.RcodeSuccess, 1, false, 0, 0},        // wildcard
		{"sub.example.com.", dns.TypeA, dns.RcodeSuccess, 0, true, 0, 1},           // referral with glue
		{"deep.sub.example.com.", dns.TypeA, dns.RcodeSuccess, 0, true, 0, 1},      // data below the cut hidden
		{"sub.example.com.", dns.TypeDS, dns.RcodeSuccess, 1, false, 0, 0},         // DS is the parent's
		{"dangling.example.com.", dns.TypeA, dns.RcodeNameError, 1, false, 300, 0}, // chain ends in NXDOMAIN
		{"tomx.example.com.", dns.TypeTXT, dns.RcodeSuccess, 1, false, 300, 0},     // chain ends in NODATA
		{"self.example.com.", dns.TypeA, dns.RcodeSuccess, 1, false, 0, 0},         // loop ends
		{`sp\ ace.example.com.`, dns.TypeA, dns.RcodeSuccess, 1, false, 0, 0},      // escapes as read from the wire
		{`sp\032ace.example.com.`, dns.TypeA, dns.RcodeSuccess, 1, false, 0, 0},    // escapes as written
		{"MIXED2.example.com.", dns.TypeA, dns.RcodeSuccess, 1, false, 0, 0},       // \077ixed2
		{"example.com.", dns.TypeMX, dns.RcodeSuccess, 2, false, 0, 2},             // in-zone MX target's A and AAAA
		{"_sip._tcp.example.com.", dns.TypeSRV, dns.RcodeSuccess, 1, false, 0, 1},  // in-zone SRV target
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			a := r.Lookup(tt.name, tt.qtype)
			if !a.Local || a.Rcode != tt.rcode || len(a.Answer) != tt.answers || a.Referral != tt.referral || len(a.Extra) != tt.extra {
				t.Fatalf("got rcode=%d referral=%v answer=%v ns=%v extra=%v", a.Rcode, a.Referral, a.Answer, a.Ns, a.Extra)
			}
			var negTTL uint32
			if len(a.Ns) == 1 && a.Ns[0].Header().Rrtype == dns.TypeSOA {
				negTTL = a.Ns[0].Header().Ttl
			}
			if negTTL != tt.negTTL {
				t.Fatalf("SOA TTL in authority %d, want %d (%v)", negTTL, tt.negTTL, a.Ns)
			}
			if len(a.Answer) > 0 && a.Answer[0].Header().Name != tt.name {
				t.Fatalf("owner %q, want the name as asked %q", a.Answer[0].Header().Name, tt.name)
			}
		})
	}
}
