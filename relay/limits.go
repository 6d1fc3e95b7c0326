package relay

import (
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
	"golang.org/x/time/rate"
)

// Limits bound what clients may use. Zero fields take the documented
// default; a negative value removes that limit.
type Limits struct {
	// AllocationsPerUser caps concurrent allocations per authenticated user
	// (the part after the colon of a TURN REST username, or the static
	// user's name). Default 64: a browser gathers one or two allocations per
	// peer connection, and a group call has a handful of them per device.
	AllocationsPerUser int

	// Allocations caps concurrent allocations in total. Default 4096, about
	// what one relay port range and a small machine carry.
	Allocations int

	// PermissionsPerAllocation caps distinct peer addresses per allocation.
	// Default 64: ICE installs one per remote candidate address.
	PermissionsPerAllocation int

	// Bandwidth caps bytes per second relayed per allocation, in each
	// direction. Default 2 MB/s (16 Mbit/s): above a 1080p video call.
	// Excess packets are dropped, as a congested link would.
	Bandwidth int64

	// Lifetime is the allocation lifetime granted when the client asks for
	// none. Default 10 minutes (RFC 8656). The engine caps requests at one
	// hour.
	Lifetime time.Duration

	// UnauthorizedBurst and UnauthorizedRate bound the 401 replies sent to
	// one source address, so a forged source cannot use the relay as a
	// reflector. Defaults 256 replies and 64 per second: an office of a
	// hundred people behind one NAT address joining a call at once gets
	// its challenges, while a reply costs at most a few times its request.
	UnauthorizedBurst int
	UnauthorizedRate  float64

	// FailureBurst and FailureRate are one source address's failure
	// budget: requests with wrong credentials it may send at once, and per
	// second after that. Once it is spent, the source's requests that carry
	// credentials are dropped unchecked (Stats.FailureDrops) until it
	// refills, so passwords cannot be guessed at line rate. Defaults 32 and
	// 1 per second: a client with a stale password fails a few times, not
	// thirty-two times in a burst. Requests from the 5-tuple of a live
	// allocation are exempt, so a guesser behind the same NAT address does
	// not end its neighbours' allocations.
	FailureBurst int
	FailureRate  float64

	// UserFailureBurst and UserFailureRate are the same budget per user
	// name (the user part of a TURN REST username), shared by every source,
	// so many sources cannot grind one account (Stats.UserFailureDrops).
	// Defaults 64 and 0.5 per second. While the budget is spent, new
	// allocations of that user are refused too: the price of stopping a
	// botnet; live allocations are exempt as above.
	UserFailureBurst int
	UserFailureRate  float64

	// HandshakeTimeout bounds a TCP or TLS client's time to complete the TLS
	// handshake and send its first request with valid credentials; a
	// connection that sends only Binding requests, unauthenticated requests
	// or garbage is closed then. Default 10s.
	HandshakeTimeout time.Duration

	// ConnsPerSource caps concurrent TCP/TLS connections from one source
	// address. Default 64.
	ConnsPerSource int

	// TrackedUsers caps the number of users with their own entry in
	// Stats.Users; the rest are counted under OtherUsers. Default 256.
	TrackedUsers int
}

func pick[T int | int64 | float64 | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0 // no limit
	}
	return v
}

func (l *Limits) allocationsPerUser() int { return pick(l.AllocationsPerUser, 64) }
func (l *Limits) allocations() int        { return pick(l.Allocations, 4096) }
func (l *Limits) permissions() int        { return pick(l.PermissionsPerAllocation, 64) }
func (l *Limits) bandwidth() int64        { return pick(l.Bandwidth, 2_000_000) }
func (l *Limits) lifetime() time.Duration { return pick(l.Lifetime, 10*time.Minute) }

// keyed returns a per-key token bucket of rate and burst, each defaulting
// when zero; a negative rate or burst removes the limit (rate 0).
func keyed[K comparable](burst int, r float64, defBurst int, defRate float64, now func() time.Time) *netcore.KeyedLimiter[K] {
	if burst < 0 || r < 0 {
		return &netcore.KeyedLimiter[K]{}
	}
	return &netcore.KeyedLimiter[K]{Rate: rate.Limit(pick(r, defRate)), Burst: pick(burst, defBurst), Now: now}
}

// unauthLimiter rations 401 replies per source address.
func (l *Limits) unauthLimiter(now func() time.Time) *netcore.KeyedLimiter[netip.Addr] {
	return keyed[netip.Addr](l.UnauthorizedBurst, l.UnauthorizedRate, 256, 64, now)
}

// failureLimiter is the failure budget per source address.
func (l *Limits) failureLimiter(now func() time.Time) *netcore.KeyedLimiter[netip.Addr] {
	return keyed[netip.Addr](l.FailureBurst, l.FailureRate, 32, 1, now)
}

// userFailureLimiter is the failure budget per user.
func (l *Limits) userFailureLimiter(now func() time.Time) *netcore.KeyedLimiter[string] {
	return keyed[string](l.UserFailureBurst, l.UserFailureRate, 64, 0.5, now)
}
func (l *Limits) handshake() time.Duration { return pick(l.HandshakeTimeout, 10*time.Second) }
func (l *Limits) connsPerSource() int      { return pick(l.ConnsPerSource, 64) }
func (l *Limits) trackedUsers() int        { return pick(l.TrackedUsers, 256) }

// bucket is a token bucket; rate 0 means unlimited. Safe for concurrent use.
type bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate, burst float64) *bucket {
	return &bucket{rate: rate, burst: burst, tokens: burst}
}

// take removes n tokens and reports whether there were enough.
func (b *bucket) take(now time.Time, n float64) bool {
	if b == nil || b.rate == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}
