package relay

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Stats is a snapshot of the relay's counters, plain data for a metrics
// exporter. Counters only grow; gauges say "now".
type Stats struct {
	Allocations      uint64 // gauge: allocations now
	AllocationsTotal uint64 // allocations ever created
	RelayPortsInUse  uint64 // gauge: relay ports bound now, reserved EVEN-PORT neighbours included
	PortRangeSize    uint64 // number of ports in the relay port range

	AuthFailures      uint64 // requests refused with 401 for bad credentials
	Challenges        uint64 // 401 challenges (requests without credentials)
	UnauthorizedDrops uint64 // 401 replies not sent: per-source budget spent
	FailureDrops      uint64 // requests dropped unchecked: the source's failure budget is spent
	UserFailureDrops  uint64 // requests dropped unchecked: the user's failure budget is spent
	PeerDenials       uint64 // requests or packets refused by the peer policy
	OwnDenials        uint64 // of PeerDenials, those naming the relay's own sockets (DenyOwn): loop attempts
	QuotaRejections   uint64 // allocations or permissions refused by a limit
	BandwidthDrops    uint64 // packets dropped by the per-allocation bandwidth cap
	Malformed         uint64 // frames that are neither STUN nor ChannelData
	ConnsRejected     uint64 // TCP/TLS connections refused (cap, handshake)
	ReadErrors        uint64 // UDP reads that failed and were retried (EMFILE, ENOBUFS)
	InProcess         uint64 // packets relayed between our own allocations in process
	ChannelDrops      uint64 // ChannelData from clients dropped: no allocation, channel or permission for it
	PermissionDrops   uint64 // datagrams from peers without a permission, dropped

	// Users holds per-user counters for at most Limits.TrackedUsers users;
	// OtherUsers sums everyone else.
	Users      map[string]UserStats
	OtherUsers UserStats
}

// UserStats counts what one user relayed. "To peer" is client→peer.
type UserStats struct {
	Allocations     uint64 // gauge
	PacketsToPeer   uint64
	BytesToPeer     uint64
	PacketsFromPeer uint64
	BytesFromPeer   uint64
}

type counters struct {
	allocationsTotal, authFailures, challenges, unauthDrops, failureDrops, userFailureDrops, peerDenials, ownDenials,
	quotaRejections, bandwidthDrops, malformed, connsRejected, inProcess, readErrors, channelDrops,
	permissionDrops atomic.Uint64
}

type userCounters struct {
	allocations                                                atomic.Int64
	packetsToPeer, bytesToPeer, packetsFromPeer, bytesFromPeer atomic.Uint64
}

func (u *userCounters) snapshot() UserStats {
	return UserStats{
		Allocations:     uint64(max(u.allocations.Load(), 0)),
		PacketsToPeer:   u.packetsToPeer.Load(),
		BytesToPeer:     u.bytesToPeer.Load(),
		PacketsFromPeer: u.packetsFromPeer.Load(),
		BytesFromPeer:   u.bytesFromPeer.Load(),
	}
}

// userTable hands out per-user counters with bounded cardinality.
type userTable struct {
	limit int
	mu    sync.Mutex
	users map[string]*userCounters
	other userCounters
}

func (t *userTable) get(user string) *userCounters {
	t.mu.Lock()
	defer t.mu.Unlock()
	if user == "" {
		return &t.other // the engine's EVEN-PORT probes have no user
	}
	if u, ok := t.users[user]; ok {
		return u
	}
	if t.users == nil {
		t.users = make(map[string]*userCounters)
	}
	if len(t.users) >= t.limit {
		return &t.other
	}
	u := new(userCounters)
	t.users[user] = u
	return u
}

func (t *userTable) snapshot() (map[string]UserStats, UserStats) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]UserStats, len(t.users))
	for k, u := range t.users {
		m[k] = u.snapshot()
	}
	return m, t.other.snapshot()
}

// logEvery lets a log line through at most once per logInterval; the
// lines held back in between are counted and reported with the next one.
type logEvery struct {
	every      netcore.Every
	suppressed atomic.Int64
}

// logInterval spaces the Info lines that any client can trigger.
const logInterval = 10 * time.Second

func (l *logEvery) allow(now time.Time) bool {
	_, ok := l.every.Allow(now, logInterval)
	return ok
}

func (l *logEvery) skip() { l.suppressed.Add(1) }

func (l *logEvery) take() int64 { return l.suppressed.Swap(0) }
