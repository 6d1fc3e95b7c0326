package relay

import (
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

func TestRESTPasswordMatchesCoturn(t *testing.T) {
	// echo -n "1700000000:alice" | openssl dgst -sha1 -hmac north -binary | base64
	if got, want := RESTPassword("north", "1700000000:alice"), "Cd/49soE35ICqcJF/bCTn8Z4OyE="; got != want {
		t.Errorf("RESTPassword = %q, want %q", got, want)
	}
	// echo -n alice:example.org:pw | md5sum
	if got, want := hex.EncodeToString(longTermKey("alice", "example.org", "pw")), "db25ea610c2a955b77b272273cbe886b"; got != want {
		t.Errorf("longTermKey = %s, want %s", got, want)
	}
}

func TestRESTCredentials(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	u, p := RESTCredentials("north", "alice", now, time.Hour)
	if u != "1700003600:alice" || p != RESTPassword("north", u) {
		t.Errorf("got %q %q", u, p)
	}
	u, _ = RESTCredentials("north", "", now, time.Hour)
	if u != "1700003600" {
		t.Errorf("got %q", u)
	}
}

func TestAuthenticatorLookup(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := newAuthenticator("example.org",
		map[string]string{"alice": "pw", "1700000100:bob": "static wins"},
		[]string{"new", "old"}, 48*time.Hour, func() time.Time { return now })
	tests := []struct {
		name, user, realm string
		wantErr           error
		wantUser          string
		wantKeys          int
	}{
		{"static", "alice", "example.org", nil, "alice", 1},
		{"static shadows REST", "1700000100:bob", "example.org", nil, "1700000100:bob", 1},
		{"REST ts:user", "1700000100:carol", "example.org", nil, "carol", 2},
		{"REST ts only", "1700000100", "example.org", nil, AnonymousRESTUser, 2},
		{"REST ts:random (Nextcloud)", "1700000100:a8Fz", "example.org", nil, "a8Fz", 2},
		{"REST ts: empty user", "1700000100:", "example.org", nil, AnonymousRESTUser, 2},
		{"expired", "1699999999:carol", "example.org", errExpired, "", 0},
		{"expiry now", "1700000000:carol", "example.org", errExpired, "", 0},
		{"lifetime above cap", "1800000000:carol", "example.org", errTooLong, "", 0},
		{"not a timestamp", "carol", "example.org", errUnknownUser, "", 0},
		{"negative", "-5:carol", "example.org", errUnknownUser, "", 0},
		{"wrong realm", "alice", "other.org", errBadRealm, "", 0},
		{"empty", "", "example.org", errMissingUsername, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.lookup(tt.user, tt.realm)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if c.userID != tt.wantUser || len(c.keys) != tt.wantKeys {
				t.Errorf("got user %q with %d keys, want %q with %d", c.userID, len(c.keys), tt.wantUser, tt.wantKeys)
			}
		})
	}
	// Rotation: the key that verified is the one the engine gets.
	c, _ := a.lookup("1700000100:carol", "example.org")
	a.remember("1700000100:carol", c.keys[1])
	if _, k, ok := a.engineKey("1700000100:carol", "example.org"); !ok || string(k) != string(c.keys[1]) {
		t.Errorf("engineKey did not return the verified (old-secret) key")
	}
}
