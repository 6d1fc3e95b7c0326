package dnssplit

import (
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func withCookie(m *dns.Msg, cookie string) *dns.Msg {
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: cookie})
	return m
}

func cookieOf(m *dns.Msg) string {
	if o := m.IsEdns0(); o != nil {
		for _, e := range o.Option {
			if c, ok := e.(*dns.EDNS0_COOKIE); ok {
				return c.Cookie
			}
		}
	}
	return ""
}

func TestCookies(t *testing.T) {
	s := splitServer(t)
	s.RateLimit = &RateLimit{PerSecond: 0.001, Burst: 1, Slip: -1, IPv4Prefix: 32}
	addr := start(t, s)
	const client = "0102030405060708"
	r := query(t, "udp", "127.0.0.2", addr, withCookie(q("blog.example.com.", dns.TypeA), client))
	got := cookieOf(r)
	if len(got) != 48 || got[:16] != client {
		t.Fatalf("reply cookie %q, want the client cookie and a 16-byte server cookie", got)
	}
	// With the server cookie the client is exempt from the rate limit.
	for i := range 10 {
		r := query(t, "udp", "127.0.0.2", addr, withCookie(q("blog.example.com.", dns.TypeA), got))
		if firstA(r) == "" {
			t.Fatalf("query %d with a valid cookie: %v", i, r)
		}
	}
	// A cookie issued to another address is not valid here: limited.
	if _, err := exchangeTimeout("udp", "127.0.0.3", addr, withCookie(q("blog.example.com.", dns.TypeA), got), 300*time.Millisecond); err != nil {
		t.Fatalf("first query from another address: %v", err) // uses the burst
	}
	if r, err := exchangeTimeout("udp", "127.0.0.3", addr, withCookie(q("blog.example.com.", dns.TypeA), got), 300*time.Millisecond); err == nil {
		t.Fatalf("a cookie from another address passed the limit: %v", r)
	}
	// Malformed cookie: FORMERR.
	r = query(t, "tcp", "127.0.0.2", addr, withCookie(q("blog.example.com.", dns.TypeA), "0102"))
	if r.Rcode != dns.RcodeFormatError {
		t.Fatalf("short cookie: %v", r)
	}
}

func TestCookieExpiry(t *testing.T) {
	s := &Server{CookieSecret: []byte("k")}
	s.init()
	defer s.Close()
	now := time.Unix(1_700_000_000, 0)
	s.clock = func() time.Time { return now }
	src := netip.MustParseAddr("192.0.2.1")
	cc, _ := hex.DecodeString("0102030405060708")
	sc := hex.EncodeToString(append(cc, s.serverCookie(cc, src, uint32(now.Unix()))...))
	req := withCookie(q("x.", dns.TypeA), sc)
	for _, tt := range []struct {
		after time.Duration
		want  cookieVerdict
		same  bool
	}{
		{0, cookieValid, true},
		{40 * time.Minute, cookieValid, false}, // valid, but refreshed
		{2 * time.Hour, cookieClient, false},
	} {
		now2 := now.Add(tt.after)
		s.clock = func() time.Time { return now2 }
		c, v := s.checkCookie(req, src)
		if v != tt.want || (c.Cookie == sc) != tt.same {
			t.Errorf("after %v: verdict %v, same cookie %v", tt.after, v, c.Cookie == sc)
		}
	}
}
