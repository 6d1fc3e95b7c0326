package natlab

import (
	"fmt"
	"testing"
	"time"
)

// TestLabLoss: with Config.Loss the router drops about that share of the
// UDP it forwards, in each direction; without it, none.
func TestLabLoss(t *testing.T) {
	for _, loss := range []int{0, 50} {
		t.Run(fmt.Sprint(loss), func(t *testing.T) {
			t.Parallel()
			lab := New(t, Config{Kind: PortRestricted, Loss: loss})
			srv := udpListen(t, lab, Server, lab.Addr(Server))
			c := udpListen(t, lab, LAN1, lab.Addr(LAN1))
			const n = 200
			for i := range n {
				if _, err := c.WriteTo([]byte(fmt.Sprint(i)), srv.LocalAddr()); err != nil {
					t.Fatal(err)
				}
				if i%20 == 19 {
					time.Sleep(time.Millisecond) // stay below socket buffer sizes
				}
			}
			got := 0
			for {
				if _, _, err := recv(srv, 500*time.Millisecond); err != nil {
					break
				}
				got++
			}
			// 200 draws at 50 %: the standard deviation is about 7.
			if loss == 0 && got != n || loss == 50 && (got < 60 || got > 140) {
				t.Errorf("loss %d%%: %d of %d datagrams arrived", loss, got, n)
			}
		})
	}
}

// TestLabPortRange: PortSet and CarrierNAT map every socket into their
// port range, whatever its local port.
func TestLabPortRange(t *testing.T) {
	for _, k := range LineKinds() {
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			lab := New(t, Config{Kind: k})
			r, ok := k.PortRange()
			if !ok {
				t.Fatalf("%v has no port range", k)
			}
			srv := udpListen(t, lab, Server, lab.Addr(Server))
			for range 8 {
				c := udpListen(t, lab, LAN1, lab.Addr(LAN1))
				m := mappingOf(t, c, srv)
				if m.Addr() != lab.PublicAddr() || m.Port() < r[0] || m.Port() > r[1] {
					t.Errorf("socket %v mapped to %v, want %v:%d-%d", c.LocalAddr(), m, lab.PublicAddr(), r[0], r[1])
				}
			}
			if k.BehindCGN() {
				if _, err := lab.Command(CGN, "true").CombinedOutput(); err != nil {
					t.Errorf("no CGN host: %v", err)
				}
			}
		})
	}
}
