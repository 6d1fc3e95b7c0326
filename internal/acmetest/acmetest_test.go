package acmetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http/httptest"
	"testing"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"golang.org/x/crypto/acme"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestResponder: HTTP-01 answers the key authorization at its path and 404
// elsewhere; TLS-ALPN-01 completes only hellos offering exactly acme-tls/1
// for a name with a challenge; both count what they answered.
func TestResponder(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cl := &acme.Client{Key: key}
	r := NewResponder()
	if err := r.set(cl, &acme.Challenge{Type: HTTP01, Token: "tok"}, "a.test"); err != nil {
		t.Fatal(err)
	}
	if err := r.set(cl, &acme.Challenge{Type: TLSALPN01, Token: "tok2"}, "b.test"); err != nil {
		t.Fatal(err)
	}
	if err := r.set(cl, &acme.Challenge{Type: "dns-01", Token: "tok3"}, "c.test"); err == nil {
		t.Error("dns-01 accepted")
	}

	want, _ := cl.HTTP01ChallengeResponse("tok")
	for _, tt := range []struct {
		path string
		code int
		body string
	}{
		{cl.HTTP01ChallengePath("tok"), 200, want},
		{cl.HTTP01ChallengePath("other"), 404, ""},
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("GET", "http://a.test:80"+tt.path, nil))
		if w.Code != tt.code || (tt.body != "" && w.Body.String() != tt.body) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, w.Code, w.Body, tt.code, tt.body)
		}
	}
	if n := r.Hits("a.test", HTTP01); n != 1 {
		t.Errorf("%d HTTP-01 hits for a.test, want 1", n)
	}

	hello := func(name string, protos ...string) error {
		c, s := net.Pipe()
		defer c.Close()
		go func() {
			defer s.Close()
			tls.Server(s, r.TLSConfig()).Handshake()
		}()
		tc := tls.Client(c, &tls.Config{ServerName: name, NextProtos: protos, InsecureSkipVerify: true})
		err := tc.Handshake()
		if err == nil && tc.ConnectionState().NegotiatedProtocol != acme.ALPNProto {
			t.Errorf("%s: negotiated %q", name, tc.ConnectionState().NegotiatedProtocol)
		}
		return err
	}
	if err := hello("b.test", acme.ALPNProto); err != nil {
		t.Errorf("acme-tls/1 hello for b.test: %v", err)
	}
	for _, tt := range []struct {
		name   string
		protos []string
	}{
		{"b.test", []string{"h2"}},
		{"b.test", []string{"h2", acme.ALPNProto}},
		{"a.test", []string{acme.ALPNProto}}, // no TLS-ALPN-01 challenge for it
	} {
		if err := hello(tt.name, tt.protos...); err == nil {
			t.Errorf("hello for %s offering %q completed", tt.name, tt.protos)
		}
	}
	if n := r.Hits("b.test", TLSALPN01); n != 1 {
		t.Errorf("%d TLS-ALPN-01 hits for b.test, want 1", n)
	}
}
