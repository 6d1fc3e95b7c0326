package relay

import (
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// testClock is a clock a test moves by hand; safe for concurrent use.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time      { return time.Unix(1_800_000_000, c.offset.Load()) }
func (c *testClock) add(d time.Duration) { c.offset.Add(int64(d)) }

// dialRawFrom is dialRaw from a chosen local address (127.0.0.x on Linux
// loopback), so one test can play many sources.
func dialRawFrom(t testing.TB, local, addr, user, pass string) *rawClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, user: user, pass: pass}
}

// challenge fetches a nonce and realm with an unauthenticated Allocate.
func (c *rawClient) challenge() {
	c.t.Helper()
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport, stun.Fingerprint)
	if _, err := c.conn.Write(req.Raw); err != nil {
		c.t.Fatal(err)
	}
	res, err := c.read()
	if err != nil {
		c.t.Fatalf("challenge: %v", err)
	}
	var nonce stun.Nonce
	var realm stun.Realm
	if nonce.GetFrom(res) != nil || realm.GetFrom(res) != nil {
		c.t.Fatal("challenge without nonce or realm")
	}
	c.nonce, c.realm = nonce.String(), realm.String()
}

// try sends one authenticated Allocate with password pass and returns the
// error code, 0 for success, or -1 when nothing came back within wait.
func (c *rawClient) try(pass string, wait time.Duration) int {
	c.t.Helper()
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport,
		stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
		stun.MessageIntegrity(longTermKey(c.user, c.realm, pass)), stun.Fingerprint)
	if _, err := c.conn.Write(req.Raw); err != nil {
		c.t.Fatal(err)
	}
	c.timeout = wait
	defer func() { c.timeout = 0 }()
	for {
		res, err := c.read()
		if err != nil {
			return -1
		}
		if res.TransactionID != req.TransactionID {
			continue
		}
		var ec stun.ErrorCodeAttribute
		if ec.GetFrom(res) != nil {
			return 0
		}
		return int(ec.Code)
	}
}

// TestFailureBudgetPerSource: a source that spent its failure budget has
// its authenticated requests dropped unchecked until the budget refills, so
// the right password found by guessing gets no answer; before, the budget
// only rationed the 401 replies and every guess was checked. Another source
// keeps being served.
func TestFailureBudgetPerSource(t *testing.T) {
	var clock testClock
	s := &Server{Users: map[string]string{"a": "secret"}, now: clock.now,
		Limits: Limits{FailureBurst: 5, FailureRate: 1, UserFailureBurst: -1}}
	addr := serve(t, s, "udp")
	attacker := dialRawFrom(t, "127.0.0.2", addr, "a", "")
	attacker.challenge()
	for i := range 5 {
		if code := attacker.try("guess"+strconv.Itoa(i), 2*time.Second); code != 401 {
			t.Fatalf("guess %d within the budget: %d, want 401", i, code)
		}
	}
	for i := range 10 {
		if code := attacker.try("guess-more"+strconv.Itoa(i), 100*time.Millisecond); code != -1 {
			t.Errorf("guess %d past the budget: %d, want no answer", i, code)
		}
	}
	if code := attacker.try("secret", 300*time.Millisecond); code != -1 {
		t.Errorf("right password past the budget: %d, want no answer (dropped unchecked)", code)
	}
	st := s.Stats()
	if st.FailureDrops != 11 || st.AuthFailures != 5 {
		t.Errorf("FailureDrops %d AuthFailures %d, want 11 and 5", st.FailureDrops, st.AuthFailures)
	}
	legit := dialRawFrom(t, "127.0.0.3", addr, "a", "secret")
	if code := legit.allocate(); code != 0 {
		t.Errorf("another source with the right password: %d", code)
	}
	clock.add(2 * time.Second) // two failures' worth refilled
	if code := attacker.try("secret", 2*time.Second); code != 0 {
		t.Errorf("right password after the refill: %d, want 0", code)
	}
}

// TestFailureBudgetPerUser: many sources guessing one account share that
// account's failure budget; other accounts and the account's live
// allocation keep being served.
func TestFailureBudgetPerUser(t *testing.T) {
	var clock testClock
	s := &Server{Users: map[string]string{"a": "secret", "b": "other"}, now: clock.now,
		Limits: Limits{UserFailureBurst: 4, UserFailureRate: 0.5}}
	addr := serve(t, s, "udp")
	owner := dialRawFrom(t, "127.0.0.2", addr, "a", "secret")
	if code := owner.allocate(); code != 0 {
		t.Fatalf("owner's allocation: %d", code)
	}
	answered := 0
	for i := range 12 {
		bot := dialRawFrom(t, "127.0.0."+strconv.Itoa(10+i), addr, "a", "")
		bot.challenge()
		switch code := bot.try("guess"+strconv.Itoa(i), 300*time.Millisecond); code {
		case 401:
			answered++
		case -1:
		default:
			t.Errorf("bot %d: %d", i, code)
		}
	}
	if answered != 4 {
		t.Errorf("%d of 12 guesses from 12 sources were checked, want 4 (the user's budget)", answered)
	}
	if st := s.Stats(); st.UserFailureDrops != 8 {
		t.Errorf("UserFailureDrops = %d, want 8", st.UserFailureDrops)
	}
	if _, code := owner.do(stun.MethodRefresh); code != 0 {
		t.Errorf("refresh of the owner's live allocation: %d", code)
	}
	if code := dialRawFrom(t, "127.0.0.3", addr, "b", "other").allocate(); code != 0 {
		t.Errorf("another user: %d", code)
	}
}

// TestRESTExpiryOnlyIsOneUser: usernames without a user part ("expiry"
// alone) count under one user for limits and Stats.Users, not one user per
// timestamp.
func TestRESTExpiryOnlyIsOneUser(t *testing.T) {
	s := &Server{Secrets: []string{"s"}, Limits: Limits{AllocationsPerUser: 1}}
	addr := serve(t, s, "udp")
	u1, p1 := RESTCredentials("s", "", time.Now(), time.Hour)
	u2, p2 := RESTCredentials("s", "", time.Now(), 2*time.Hour)
	if code := dialRaw(t, "udp", addr, u1, p1).allocate(); code != 0 {
		t.Fatalf("first: %d", code)
	}
	if code := dialRaw(t, "udp", addr, u2, p2).allocate(); code != 486 {
		t.Errorf("second expiry-only credential: %d, want 486 (same user)", code)
	}
	if st := s.Stats(); len(st.Users) != 1 || st.Users[AnonymousRESTUser].Allocations != 1 {
		t.Errorf("Users = %v, want one entry %q", st.Users, AnonymousRESTUser)
	}
}
