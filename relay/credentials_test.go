package relay

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestCredentialsHandler(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := &CredentialsHandler{Secret: "north", URIs: []string{"turn:a:3478"}, TTL: time.Hour,
		User: func(r *http.Request) string { return r.Header.Get("X-User") }, now: func() time.Time { return now }}
	tests := []struct {
		name, method, user string
		code               int
		username           string
	}{
		{"GET with user", "GET", "alice", 200, "1700003600:alice"},
		{"POST without user", "POST", "", 200, "1700003600"},
		{"DELETE", "DELETE", "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "/", nil)
			req.Header.Set("X-User", tt.user)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Fatalf("code %d, want %d", rec.Code, tt.code)
			}
			if tt.code != 200 {
				return
			}
			var got iceServer
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Username != tt.username || got.Credential != RESTPassword("north", tt.username) || got.TTL != 3600 ||
				len(got.URLs) != 1 || rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("got %+v", got)
			}
			// The server accepts what the handler issued.
			a := newAuthenticator("r", nil, []string{"north"}, 48*time.Hour, func() time.Time { return now })
			if _, err := a.lookup(got.Username, "r"); err != nil {
				t.Errorf("issued credential refused: %v", err)
			}
		})
	}
	rec := httptest.NewRecorder()
	(&CredentialsHandler{}).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 503 {
		t.Errorf("no secret: %d, want 503", rec.Code)
	}
}

// TestSetCredentials replaces users and secrets on a serving relay: the new
// ones work at once, the removed ones are refused at once (also for an
// allocation made with them), and Credentials signs with the new secret.
func TestSetCredentials(t *testing.T) {
	s := &Server{Users: map[string]string{"alice": "old"}, Secrets: []string{"north"}, Peers: loopbackOnly}
	addr := serve(t, s, "udp")
	peer := netip.MustParseAddrPort("127.0.0.1:5000")

	alice := dialRaw(t, "udp", addr, "alice", "old")
	if code := alice.allocate(); code != 0 {
		t.Fatalf("alice before: %d", code)
	}
	restName, restPass, err := s.Credentials("bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if restPass != RESTPassword("north", restName) {
		t.Fatalf("Credentials signed with something other than north")
	}

	s.SetCredentials(map[string]string{"alice": "new", "carol": "pw"}, []string{"south"})

	if code := alice.permit(peer); code != 401 {
		t.Errorf("alice's allocation with the old password: permission %d, want 401", code)
	}
	if code := dialRaw(t, "udp", addr, "alice", "old").allocate(); code != 401 {
		t.Errorf("alice, old password: %d, want 401", code)
	}
	if code := dialRaw(t, "udp", addr, "alice", "new").allocate(); code != 0 {
		t.Errorf("alice, new password: %d, want 0", code)
	}
	if code := dialRaw(t, "udp", addr, "carol", "pw").allocate(); code != 0 {
		t.Errorf("carol, added: %d, want 0", code)
	}
	if code := dialRaw(t, "udp", addr, restName, restPass).allocate(); code != 401 {
		t.Errorf("REST credential of the removed secret: %d, want 401", code)
	}
	name, pass, err := s.Credentials("bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if pass != RESTPassword("south", name) {
		t.Errorf("Credentials after SetCredentials does not sign with south")
	}
	if code := dialRaw(t, "udp", addr, name, pass).allocate(); code != 0 {
		t.Errorf("REST credential of the new secret: %d, want 0", code)
	}

	s.SetCredentials(nil, nil)
	if _, _, err := s.Credentials("bob", time.Hour); !errors.Is(err, ErrNoSecret) {
		t.Errorf("Credentials with no secret: %v, want ErrNoSecret", err)
	}
	if code := dialRaw(t, "udp", addr, "carol", "pw").allocate(); code != 401 {
		t.Errorf("carol after all users removed: %d, want 401", code)
	}
}

// TestCredentialsHandlerFollowsServer: a handler bound to a Server signs
// with the secret in force after SetCredentials, and answers 503 without one.
func TestCredentialsHandlerFollowsServer(t *testing.T) {
	s := &Server{Secrets: []string{"north"}}
	h := &CredentialsHandler{Server: s, Secret: "ignored"}
	get := func() (int, iceServer) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		var got iceServer
		if rec.Code == 200 {
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
		}
		return rec.Code, got
	}
	for _, secret := range []string{"north", "south"} {
		if secret == "south" {
			s.SetCredentials(nil, []string{"south", "north"})
		}
		code, got := get()
		if code != 200 || got.Credential != RESTPassword(secret, got.Username) {
			t.Errorf("secret %s: code %d, credential not signed with it", secret, code)
		}
	}
	s.SetCredentials(map[string]string{"a": "b"}, nil)
	if code, _ := get(); code != 503 {
		t.Errorf("no secret: %d, want 503", code)
	}
}
