package relay

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
			a := &authenticator{realm: "r", secrets: []string{"north"}, maxLife: 48 * time.Hour, now: func() time.Time { return now }}
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
