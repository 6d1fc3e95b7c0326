package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/icecheck"
	"github.com/hairpin-go/hairpin/internal/natlab"
)

// TestLabSymmetricNATsThroughRelay: two ICE agents behind two different
// symmetric (address-and-port-dependent mapping) NATs, so no direct path,
// connect with relay candidates only through our relay, which itself sits
// behind site A's router with port forwards and advertises the public
// address. Site A's router does not hairpin: agent A's allocation reaching
// agent B's allocation (both on our relay) works only because the relay
// relays between its own allocations in process.
func TestLabSymmetricNATsThroughRelay(t *testing.T) {
	const lo, hi = 50000, 50007
	fw := []natlab.Forward{{Proto: "udp", Port: 3478, To: natlab.LAN1}}
	for p := uint16(lo); p <= hi; p++ {
		fw = append(fw, natlab.Forward{Proto: "udp", Port: p, To: natlab.LAN1})
	}
	lab := natlab.New(t, natlab.Config{Kind: natlab.Symmetric, SiteB: natlab.Symmetric, Forwards: fw})
	lan := lab.Addr(natlab.LAN1)
	public := lab.PublicAddr()

	srv := &Server{
		Secrets:    []string{"lab-secret"},
		Public:     public,
		RelayAddr:  lan,
		RelayPorts: PortRange{Min: lo, Max: hi},
		ListenRelay: func(network string, laddr netip.AddrPort) (net.PacketConn, error) {
			return lab.ListenPacket(natlab.LAN1, network, laddr.String())
		},
	}
	pc, err := lab.ListenPacket(natlab.LAN1, "udp4", "0.0.0.0:3478")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServePacket(pc) }()
	t.Cleanup(func() {
		srv.Close()
		<-errc
	})

	// Agent A is on site A's LAN and uses the relay's LAN address (as split
	// DNS would give it); agent B is at site B and uses the public address.
	cred := func(user string) (string, string) {
		t.Helper()
		name, pass, err := srv.Credentials(user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return name, pass
	}
	ua, pa := cred("alice")
	ub, pb := cred("bob")
	res := icecheck.Relayed(t, lab,
		icecheck.Peer{Host: natlab.LAN2, TURN: netip.AddrPortFrom(lan, 3478).String(), Username: ua, Password: pa},
		icecheck.Peer{Host: natlab.SiteBLAN, TURN: netip.AddrPortFrom(public, 3478).String(), Username: ub, Password: pb})
	if res.LocalA != public.String() || res.LocalB != public.String() {
		t.Errorf("relay candidates %s and %s do not carry the public address %s", res.LocalA, res.LocalB, public)
	}
	st := srv.Stats()
	if st.Allocations != 2 || st.InProcess == 0 {
		t.Errorf("stats: %d allocations, %d packets in process", st.Allocations, st.InProcess)
	}
	t.Logf("relay stats: %+v", st)
}
