package nat

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// barrier marks a transaction slowServer answers at once.
const barrier = 0xff

// slowServer answers every Binding request, but holds the answer to a
// transaction's first transmission until its second has arrived, as a
// loaded link or server does: the retransmission is not a loss.
func slowServer(t *testing.T, dropFirst bool) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		seen := map[txID]int{}
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() != nil {
				continue
			}
			if m.TransactionID[0] == barrier {
				seen[m.TransactionID] = 1 // answered at once
			}
			seen[m.TransactionID]++
			answer := func() {
				r := stun.Message{TransactionID: m.TransactionID, Type: stun.BindingSuccess}
				r.WriteHeader()
				addAddr(&r, stun.AttrXORMappedAddress, from.(*net.UDPAddr).AddrPort())
				_, _ = pc.WriteTo(r.Raw, from)
			}
			switch seen[m.TransactionID] {
			case 1:
				// held: answered after the second transmission
			case 2:
				answer() // the second
				if !dropFirst {
					answer() // the first, late
				}
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestSlowAnswerIsNotLoss: an exchange answered only after a retransmission
// counts its first transmission lost until a second answer shows it was
// only slow; then the loss is taken back. Where the first really was lost,
// the loss stays. Before, both cases counted one loss in two, so a loaded
// machine read as a lossy link and the hairpin verdict as unconfirmed.
func TestSlowAnswerIsNotLoss(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dropFirst bool
		wantLost  int
	}{
		{"slow", false, 0},
		{"lost", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := slowServer(t, tc.dropFirst)
			e := newEngine(func(ctx context.Context) (net.PacketConn, error) {
				var lc net.ListenConfig
				return lc.ListenPacket(ctx, "udp4", "127.0.0.1:0")
			})
			defer e.close()
			s, err := e.open(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			plan := spaced{interval: 50 * time.Millisecond, tail: time.Second, tries: func() int { return 3 }}
			txid := newTxID()
			txid[0] = 0 // a random first byte could be the barrier mark (1 in 256)
			out := e.exchange(ctx, s, s, srv, request{txid: txid}, from(srv), false, plan)
			if !out.answered || out.sent != 2 {
				t.Fatalf("answered %v after %d sends, want answered after 2", out.answered, out.sent)
			}
			// The late duplicate arrives after the exchange ended; an
			// exchange answered at once on the same socket is the barrier:
			// the server sends its answer after the duplicate, and one
			// reader takes both in order.
			id := newTxID()
			id[0] = barrier
			fresh := spaced{interval: time.Second, tail: time.Second, tries: func() int { return 3 }}
			if b := e.exchange(ctx, s, s, srv, request{txid: id}, from(srv), false, fresh); !b.answered || b.sent != 1 {
				t.Fatalf("barrier exchange: answered %v after %d sends", b.answered, b.sent)
			}
			e.mu.Lock()
			lost := e.lost
			e.mu.Unlock()
			if lost != tc.wantLost {
				t.Errorf("lost = %d, want %d", lost, tc.wantLost)
			}
		})
	}
}
