package relay

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // RFC 8489 long-term credential key is MD5 by definition.
	"crypto/sha1" //nolint:gosec // coturn's TURN REST API password is HMAC-SHA1 by definition.
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Credentials and reported (never sent) for refused
// credentials.
var (
	// ErrNoSecret means the server has no shared secret to sign with.
	ErrNoSecret = errors.New("relay: no shared secret configured")
)

var (
	errUnknownUser     = errors.New("relay: unknown user")
	errExpired         = errors.New("relay: credential expired")
	errTooLong         = errors.New("relay: credential lifetime above the cap")
	errBadIntegrity    = errors.New("relay: message integrity mismatch")
	errBadRealm        = errors.New("relay: wrong realm")
	errMissingUsername = errors.New("relay: missing username or realm")
)

// defaultMaxCredentialLifetime caps how far in the future a TURN REST API
// credential may expire. Nextcloud Talk and most web apps issue 24-hour
// credentials; two days leaves room for clock skew and long calls while a
// leaked credential still dies.
const defaultMaxCredentialLifetime = 48 * time.Hour

// longTermKey is the RFC 8489 long-term credential key MD5(user:realm:pass).
func longTermKey(username, realm, password string) []byte {
	h := md5.New() //nolint:gosec // see import
	h.Write([]byte(username))
	h.Write([]byte{':'})
	h.Write([]byte(realm))
	h.Write([]byte{':'})
	h.Write([]byte(password))
	return h.Sum(nil)
}

// RESTPassword returns the TURN REST API password for username under secret:
// base64(HMAC-SHA1(secret, username)), byte-compatible with coturn's
// use-auth-secret.
func RESTPassword(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// RESTCredentials returns a TURN REST API username "expiry:user" (or just
// "expiry" when user is empty) valid until now+ttl, and its password.
func RESTCredentials(secret, user string, now time.Time, ttl time.Duration) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10)
	if user != "" {
		username += ":" + user
	}
	return username, RESTPassword(secret, username)
}

// AnonymousRESTUser is the user that TURN REST usernames without a user part
// ("expiry" alone) count under, for Limits.AllocationsPerUser, the failure
// budget and Stats.Users: one group rather than one user per timestamp.
const AnonymousRESTUser = "(anonymous)"

// parseRESTUsername splits a coturn-style "expiry[:anything]" username. The
// user ID is the part after the first colon, or AnonymousRESTUser.
func parseRESTUsername(username string) (expiry time.Time, userID string, ok bool) {
	ts, rest, found := strings.Cut(username, ":")
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, "", false
	}
	userID = AnonymousRESTUser
	if found && rest != "" {
		userID = rest
	}
	return time.Unix(n, 0), userID, true
}

// credential is the outcome of a successful lookup.
type credential struct {
	keys   [][]byte // candidate keys, one per live secret
	userID string
}

// authenticator looks credentials up: realm and lifetime are fixed at
// start, users and secrets are one credSet that SetCredentials swaps.
type authenticator struct {
	realm   string
	maxLife time.Duration
	now     func() time.Time

	creds atomic.Pointer[credSet] // never nil after newAuthenticator

	// verified remembers which key verified a username most recently, so
	// the engine, which wants exactly one key, checks the same one.
	mu       sync.Mutex
	verified map[string][]byte
}

// credSet is one generation of users and secrets, replaced as a whole.
type credSet struct {
	users   map[string]string
	secrets []string
}

// newAuthenticator copies users and secrets into its first credSet.
func newAuthenticator(realm string, users map[string]string, secrets []string, maxLife time.Duration, now func() time.Time) *authenticator {
	a := &authenticator{realm: realm, maxLife: maxLife, now: now}
	a.set(users, secrets)
	return a
}

// current returns the users and secrets in force.
func (a *authenticator) current() (map[string]string, []string) {
	c := a.creds.Load()
	return c.users, c.secrets
}

// set replaces users and secrets and forgets which key verified whom, so a
// removed secret or password stops working at once.
func (a *authenticator) set(users map[string]string, secrets []string) {
	c := &credSet{users: make(map[string]string, len(users)), secrets: append([]string(nil), secrets...)}
	for k, v := range users {
		c.users[k] = v
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.creds.Store(c)
	a.verified = nil
}

// maxVerified bounds the verified-key cache; when full it starts afresh.
const maxVerified = 16384

func (a *authenticator) lookup(username, realm string) (credential, error) {
	if username == "" || realm == "" {
		return credential{}, errMissingUsername
	}
	if realm != a.realm {
		return credential{}, errBadRealm
	}
	users, secrets := a.current()
	if pw, ok := users[username]; ok {
		return credential{keys: [][]byte{longTermKey(username, realm, pw)}, userID: username}, nil
	}
	if len(secrets) == 0 {
		return credential{}, errUnknownUser
	}
	expiry, userID, ok := parseRESTUsername(username)
	if !ok {
		return credential{}, errUnknownUser
	}
	now := a.now()
	if !expiry.After(now) {
		return credential{}, errExpired
	}
	if expiry.Sub(now) > a.maxLife {
		return credential{}, errTooLong
	}
	c := credential{userID: userID}
	for _, s := range secrets {
		c.keys = append(c.keys, longTermKey(username, realm, RESTPassword(s, username)))
	}
	return c, nil
}

// maxUserKey bounds the user names the failure budget keys by: a request
// may claim any username up to the STUN limit of 509 bytes.
const maxUserKey = 128

// userKey is the name a request's failure budget and limits are kept under:
// the user part of a TURN REST username, a static user's name, or (for names
// that are neither) the name itself, cut to maxUserKey bytes.
func (a *authenticator) userKey(username string) string {
	if users, _ := a.current(); hasKey(users, username) {
		return username
	}
	if _, id, ok := parseRESTUsername(username); ok {
		return id
	}
	return username[:min(len(username), maxUserKey)]
}

func (a *authenticator) remember(username string, key []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.verified == nil || len(a.verified) >= maxVerified {
		a.verified = make(map[string][]byte)
	}
	a.verified[username] = key
}

// engineKey is what the engine's auth hook gets: the key that verified the
// request in the filter, so rotation with several secrets works.
func (a *authenticator) engineKey(username, realm string) (userID string, key []byte, ok bool) {
	c, err := a.lookup(username, realm)
	if err != nil {
		return "", nil, false
	}
	a.mu.Lock()
	k, found := a.verified[username]
	a.mu.Unlock()
	if !found {
		k = c.keys[0]
	}
	return c.userID, k, true
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
