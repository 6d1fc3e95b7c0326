package relay

import (
	"net"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// TestBucket: the per-allocation bandwidth bucket starts full, refills at
// its rate up to the burst, refuses a packet larger than what is left
// without spending anything, and rate 0 (Bandwidth -1) never refuses.
func TestBucket(t *testing.T) {
	type step struct {
		after time.Duration
		n     float64
		want  bool
	}
	for _, tt := range []struct {
		name        string
		rate, burst float64
		steps       []step
	}{
		{"burst then empty", 1000, 1000, []step{{0, 600, true}, {0, 400, true}, {0, 1, false}}},
		{"refill at rate", 1000, 1000, []step{{0, 1000, true}, {100 * time.Millisecond, 100, true}, {0, 1, false}}},
		{"refill capped at burst", 1000, 1000, []step{{0, 1000, true}, {time.Hour, 1000, true}, {0, 1, false}}},
		{"refusal spends nothing", 1000, 1000, []step{{0, 900, true}, {0, 200, false}, {0, 100, true}}},
		{"bigger than burst never passes", 1000, 1000, []step{{time.Hour, 1001, false}, {0, 1000, true}}},
		{"unlimited", 0, 0, []step{{0, 1e9, true}, {0, 1e9, true}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBucket(tt.rate, tt.burst)
			now := time.Unix(1_800_000_000, 0)
			for i, st := range tt.steps {
				now = now.Add(st.after)
				if got := b.take(now, st.n); got != st.want {
					t.Fatalf("step %d: take(%v) = %v, want %v", i, st.n, got, st.want)
				}
			}
		})
	}
}

// TestBandwidthCap: a client that sends faster than Limits.Bandwidth gets
// the excess dropped and counted in Stats.BandwidthDrops, in both
// directions; the default cap does not touch a short burst, and -1 removes
// the cap.
func TestBandwidthCap(t *testing.T) {
	const packets, size = 40, 1000
	for _, tt := range []struct {
		name           string
		bandwidth      int64
		minOK, maxOK   int // packets through, each direction
		wantDropsLeast int
	}{
		// 5 kB/s with a 5 kB burst: 5 packets of the burst, plus what
		// refills while the 40 are sent (a few ms: 5 bytes per ms).
		{"5 kB/s", 5000, 5, 8, 2 * (packets - 8)},
		{"default 2 MB/s", 0, packets, packets, 0},
		{"unlimited", -1, packets, packets, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Users: map[string]string{"alice": "pw"}, Peers: loopbackOnly,
				Limits: Limits{Bandwidth: tt.bandwidth}}
			c := dialTransport(t, "udp", serve(t, s, "udp"), "alice", "pw")
			if code := c.allocate(); code != 0 {
				t.Fatalf("allocate: %d", code)
			}
			peer, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			if code := c.channelBind(0x4000, netcore.AddrPort(peer.LocalAddr())); code != 0 {
				t.Fatalf("channel bind: %d", code)
			}
			payload := make([]byte, size)
			for range packets {
				c.channelData(0x4000, payload)
			}
			// Every packet is either relayed or dropped: wait for the sum.
			settled := func(relayed func(UserStats) uint64, drops uint64) {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for {
					st := s.Stats()
					if relayed(st.Users["alice"])+st.BandwidthDrops == drops {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("not settled: %+v", st)
					}
					time.Sleep(2 * time.Millisecond)
				}
			}
			settled(func(u UserStats) uint64 { return u.PacketsToPeer }, packets)
			out := int(s.Stats().Users["alice"].PacketsToPeer)
			if out < tt.minOK || out > tt.maxOK {
				t.Errorf("client→peer: %d of %d relayed, want %d..%d", out, packets, tt.minOK, tt.maxOK)
			}
			buf := make([]byte, 2048)
			for i := range out {
				_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, _, err := peer.ReadFrom(buf); err != nil {
					t.Fatalf("peer read %d of %d: %v", i+1, out, err)
				}
			}
			outDrops := s.Stats().BandwidthDrops
			for range packets {
				if _, err := peer.WriteTo(payload, net.UDPAddrFromAddrPort(c.relayed)); err != nil {
					t.Fatal(err)
				}
			}
			settled(func(u UserStats) uint64 { return u.PacketsToPeer + u.PacketsFromPeer }, 2*packets)
			in := int(s.Stats().Users["alice"].PacketsFromPeer)
			if in < tt.minOK || in > tt.maxOK {
				t.Errorf("peer→client: %d of %d relayed, want %d..%d", in, packets, tt.minOK, tt.maxOK)
			}
			drops := s.Stats().BandwidthDrops
			if int(drops) < tt.wantDropsLeast || tt.wantDropsLeast == 0 && drops != 0 {
				t.Errorf("BandwidthDrops %d (%d after client→peer), want at least %d", drops, outDrops, tt.wantDropsLeast)
			}
		})
	}
}
