package relay

import (
	"encoding/json"
	"net/http"
	"time"
)

// defaultCredentialTTL is the lifetime of issued credentials: a day, what
// Nextcloud Talk and coturn's examples use.
const defaultCredentialTTL = 24 * time.Hour

// CredentialsHandler is an http.Handler that issues time-limited TURN REST
// API credentials as an RTCIceServer JSON object, ready for
// new RTCPeerConnection({iceServers: [server]}):
//
//	{"urls":["turn:turn.example.com:3478"],"username":"1735689600:alice","credential":"...","ttl":86400}
//
// It does not authenticate the web user; wrap it in the application's own
// authentication and set User to name the user in the credential.
type CredentialsHandler struct {
	// Secret is the shared secret, one of the relay's Server.Secrets.
	Secret string

	// Server, if set, signs with that relay's first secret in force, so
	// the handler follows Server.SetCredentials; Secret is then ignored.
	Server *Server

	// URIs lists the TURN URIs returned as "urls".
	URIs []string

	// TTL optionally specifies the credential lifetime. If zero, 24 hours.
	TTL time.Duration

	// User optionally names the user for a request; the name becomes the
	// part after the colon of the username, which the relay's per-user
	// limits and statistics use. If nil, credentials carry no user.
	User func(*http.Request) string

	// now is the clock, for tests.
	now func() time.Time
}

// iceServer is the RTCIceServer dictionary (W3C WebRTC) plus ttl.
type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
	TTL        int64    `json:"ttl"`
}

func (h *CredentialsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	secret := h.Secret
	if h.Server != nil {
		h.Server.init()
		secret = ""
		if _, secrets := h.Server.auth.current(); len(secrets) > 0 {
			secret = secrets[0]
		}
	}
	if secret == "" {
		http.Error(w, "relay: no shared secret configured", http.StatusServiceUnavailable)
		return
	}
	ttl := h.TTL
	if ttl <= 0 {
		ttl = defaultCredentialTTL
	}
	now := time.Now
	if h.now != nil {
		now = h.now
	}
	user := ""
	if h.User != nil {
		user = h.User(r)
	}
	name, pass := RESTCredentials(secret, user, now(), ttl)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	uris := h.URIs
	if uris == nil {
		uris = []string{}
	}
	_ = json.NewEncoder(w).Encode(iceServer{URLs: uris, Username: name, Credential: pass, TTL: int64(ttl / time.Second)})
}

// Credentials returns TURN REST API credentials for user valid for ttl (24
// hours if zero), signed with the first secret in force (Secrets, or the
// last SetCredentials).
func (s *Server) Credentials(user string, ttl time.Duration) (username, password string, err error) {
	s.init()
	_, secrets := s.auth.current()
	if len(secrets) == 0 {
		return "", "", ErrNoSecret
	}
	if ttl <= 0 {
		ttl = defaultCredentialTTL
	}
	username, password = RESTCredentials(secrets[0], user, s.now(), ttl)
	return username, password, nil
}
