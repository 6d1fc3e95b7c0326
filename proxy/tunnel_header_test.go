package proxy

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
)

func TestStreamHeaderRoundTrip(t *testing.T) {
	for _, h := range []streamHeader{
		{Protocol: ProtocolTLS, ServerName: "blog.example.com", ALPN: []string{"h2", "http/1.1"},
			Source: mustAP("198.51.100.7:40000"), Dest: mustAP("203.0.113.5:443")},
		{Protocol: ProtocolHTTP, ServerName: "xn--bcher-kva.example", Source: mustAP("[2001:db8::1]:1"), Dest: mustAP("[2001:db8::2]:80")},
		{Protocol: ProtocolTLS}, // no SNI (a default route), no addresses
		{Protocol: ProtocolTLS, ServerName: "a.example", Source: mustAP("[::ffff:192.0.2.1]:5")}, // mapped: sent as IPv4
	} {
		msg, err := encodeStreamHeader(&h)
		if err != nil {
			t.Fatal(err)
		}
		body, err := readMsg(bytes.NewReader(append(msg, "payload"...)), magicStream)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseStreamHeader(body)
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		want := h
		want.Source = netip.AddrPortFrom(h.Source.Addr().Unmap(), h.Source.Port())
		if got.Protocol != want.Protocol || got.ServerName != want.ServerName || !slices.Equal(got.ALPN, want.ALPN) ||
			got.Source != want.Source || got.Dest != want.Dest {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
}

func TestStreamHeaderRejects(t *testing.T) {
	good, _ := encodeStreamHeader(&streamHeader{Protocol: ProtocolTLS, ServerName: "a.example"})
	body := good[6:]
	for name, b := range map[string][]byte{
		"empty":      {},
		"protocol 0": append([]byte{0}, body[1:]...),
		"protocol 9": append([]byte{9}, body[1:]...),
		"trailing":   append(slices.Clone(body), 0),
		"truncated":  body[:len(body)-1],
		"upper case": bytes.Replace(body, []byte("a.example"), []byte("A.example"), 1),
		"addr len 5": append([]byte{1, 5}, body[2:]...),
		"bad name":   bytes.Replace(body, []byte("a.example"), []byte("a..xampl"), 1),
		"many ALPN":  append(body[:len(body)-1], 17),
	} {
		if _, err := parseStreamHeader(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	if _, err := readMsg(bytes.NewReader([]byte("HPS1\xff\xff")), magicStream); err == nil {
		t.Error("oversized body read")
	}
	if _, err := readMsg(bytes.NewReader(good), magicClaim); err == nil {
		t.Error("wrong magic read")
	}
}

// FuzzStreamHeader: any body either fails or is the one encoding of what it
// decodes to (so the agent sees exactly what the edge meant), with a valid
// protocol and a normalized name.
func FuzzStreamHeader(f *testing.F) {
	for _, h := range []streamHeader{
		{Protocol: ProtocolTLS, ServerName: "blog.example.com", ALPN: []string{"h2", "acme-tls/1"},
			Source: mustAP("198.51.100.7:40000"), Dest: mustAP("203.0.113.5:443")},
		{Protocol: ProtocolHTTP, ServerName: "a.b", Source: mustAP("[2001:db8::1]:1"), Dest: mustAP("[2001:db8::2]:80")},
	} {
		msg, _ := encodeStreamHeader(&h)
		f.Add(msg[6:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := parseStreamHeader(body)
		if err != nil {
			return
		}
		if h.Protocol != ProtocolTLS && h.Protocol != ProtocolHTTP {
			t.Fatalf("protocol %v", h.Protocol)
		}
		if n, err := NormalizeName(h.ServerName); err != nil || n != h.ServerName {
			t.Fatalf("name %q not normalized", h.ServerName)
		}
		msg, err := encodeStreamHeader(h)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(msg[6:], body) {
			t.Fatalf("re-encoded %x, was %x", msg[6:], body)
		}
	})
}

// FuzzClaim: claims and claim replies decode to what re-encodes to the same
// bytes, and the edge's decision on any decoded name never grants a name
// its authorisation does not cover.
func FuzzClaim(f *testing.F) {
	msg, _ := encodeClaim([]string{"blog.example.com", "*.home.example.com", "evil.example.org"})
	f.Add(msg[6:])
	f.Add([]byte{1, 1, '*'})
	f.Fuzz(func(t *testing.T, body []byte) {
		if st, err := parseClaimReply(body, int(firstByte(body))); err == nil && len(st) != int(body[0]) {
			t.Fatalf("%d statuses for %d", len(st), body[0])
		}
		names, err := parseClaim(body)
		if err != nil {
			return
		}
		msg, err := encodeClaim(names)
		if err != nil || !bytes.Equal(msg[6:], body) {
			t.Fatalf("re-encode: %x, %v; was %x", msg, err, body)
		}
		e := &Edge{}
		es := &edgeSession{agent: &EdgeAgent{Names: []string{"*.home.example.com", "blog.example.com"}}}
		st := e.grant(es, names)
		for i, n := range names {
			if st[i] != claimOK {
				continue
			}
			p, err := normalizeClaim(n)
			if err != nil || !(p == "blog.example.com" || claimCovers(".home.example.com", p)) {
				t.Fatalf("granted %q", n)
			}
		}
	})
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func TestClaimCovers(t *testing.T) {
	for _, c := range []struct {
		auth, claim string
		want        bool
	}{
		{"blog.example.com", "blog.example.com", true},
		{"blog.example.com", "x.blog.example.com", false},
		{"*.example.com", "blog.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "*.home.example.com", true},
		{"*.example.com", "*.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
		{"*.example.com", "*.com", false},
		{"blog.example.com", "*.example.com", false},
	} {
		a, _ := normalizeClaim(c.auth)
		cl, _ := normalizeClaim(c.claim)
		if got := claimCovers(a, cl); got != c.want {
			t.Errorf("claimCovers(%q, %q) = %v", c.auth, c.claim, got)
		}
	}
	for _, bad := range []string{"", "*", "a.*.example", "bad name"} {
		if _, err := normalizeClaim(bad); err == nil {
			t.Errorf("normalizeClaim(%q) accepted", bad)
		}
	}
}
