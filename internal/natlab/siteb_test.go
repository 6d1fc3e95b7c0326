package natlab

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// TestSiteBHolePunching places LAN1 and SiteBLAN behind independent NATs and
// punches a UDP hole the way ICE does with server-reflexive candidates: both
// learn their public mapping from Server and send to each other's. That works
// between endpoint-independent mappings and fails between symmetric NATs.
func TestSiteBHolePunching(t *testing.T) {
	for _, tc := range []struct {
		a, b Kind
		ok   bool
	}{
		{PortRestricted, PortRestricted, true},
		{AddressRestricted, OneToOne, true},
		{NoNAT, PortRestricted, true},
		{DoubleNAT, PortRestricted, true},
		{PortRestricted, DoubleNAT, true},
		{Symmetric, Symmetric, false},
		{PortRestricted, Symmetric, false},
	} {
		t.Run(fmt.Sprintf("%v-%v", tc.a, tc.b), func(t *testing.T) {
			t.Parallel()
			lab := New(t, Config{Kind: tc.a, SiteB: tc.b})
			s := udpListen(t, lab, Server, lab.Addr(Server))
			a := udpListen(t, lab, LAN1, netip.Addr{})
			b := udpListen(t, lab, SiteBLAN, netip.Addr{})
			ma, mb := mappingOf(t, a, s), mappingOf(t, b, s)
			if ma.Addr() != lab.PublicAddr() || mb.Addr() != lab.SiteBPublicAddr() {
				t.Fatalf("mappings %v and %v, want addresses %v and %v", ma, mb, lab.PublicAddr(), lab.SiteBPublicAddr())
			}
			for range 3 {
				if _, err := a.WriteTo([]byte("from-a"), net.UDPAddrFromAddrPort(mb)); err != nil {
					t.Fatal(err)
				}
				if _, err := b.WriteTo([]byte("from-b"), net.UDPAddrFromAddrPort(ma)); err != nil {
					t.Fatal(err)
				}
			}
			_, _, errA := recv(a, quiet)
			_, _, errB := recv(b, quiet)
			if got := errA == nil && errB == nil; got != tc.ok {
				t.Errorf("hole punched: %v (LAN1 read: %v, SiteBLAN read: %v), want %v", got, errA, errB, tc.ok)
			}
		})
	}
}
