package relay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/natlab"
	"github.com/pion/ice/v2"
	pstun "github.com/pion/stun"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// nsNet is a pion transport.Net whose sockets live in one lab host.
type nsNet struct {
	*stdnet.Net
	lab  *natlab.Lab
	host natlab.Host
}

func (n *nsNet) ListenPacket(network, address string) (net.PacketConn, error) {
	return n.lab.ListenPacket(n.host, network, address)
}

func (n *nsNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	a := ":0"
	if laddr != nil {
		a = laddr.String()
	}
	pc, err := n.lab.ListenPacket(n.host, network, a)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func (n *nsNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.lab.Dial(context.Background(), n.host, network, raddr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

func (n *nsNet) Dial(network, address string) (net.Conn, error) {
	return n.lab.Dial(context.Background(), n.host, network, address)
}

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
	newAgent := func(host natlab.Host, turnAddr netip.Addr, user string) *ice.Agent {
		t.Helper()
		name, pass, err := srv.Credentials(user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		u, err := pstun.ParseURI("turn:" + net.JoinHostPort(turnAddr.String(), "3478") + "?transport=udp")
		if err != nil {
			t.Fatal(err)
		}
		u.Username, u.Password = name, pass
		std, err := stdnet.NewNet()
		if err != nil {
			t.Fatal(err)
		}
		fail := 10 * time.Second
		a, err := ice.NewAgent(&ice.AgentConfig{
			Urls:             []*pstun.URI{u},
			NetworkTypes:     []ice.NetworkType{ice.NetworkTypeUDP4},
			CandidateTypes:   []ice.CandidateType{ice.CandidateTypeRelay},
			MulticastDNSMode: ice.MulticastDNSModeDisabled,
			FailedTimeout:    &fail,
			Net:              &nsNet{Net: std, lab: lab, host: host},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close() })
		return a
	}
	agentA := newAgent(natlab.LAN2, lan, "alice")
	agentB := newAgent(natlab.SiteBLAN, public, "bob")

	// Trickle candidates to the other agent through channels.
	connect := func(from, to *ice.Agent) {
		if err := from.OnCandidate(func(c ice.Candidate) {
			if c == nil {
				return
			}
			rc, err := ice.UnmarshalCandidate(c.Marshal())
			if err == nil {
				err = to.AddRemoteCandidate(rc)
			}
			if err != nil {
				t.Errorf("candidate %s: %v", c, err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	connect(agentA, agentB)
	connect(agentB, agentA)
	ufragA, pwdA, _ := agentA.GetLocalUserCredentials()
	ufragB, pwdB, _ := agentB.GetLocalUserCredentials()
	if err := agentA.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	if err := agentB.GatherCandidates(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	type result struct {
		conn *ice.Conn
		err  error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := agentB.Accept(ctx, ufragA, pwdA)
		accepted <- result{c, err}
	}()
	connA, err := agentA.Dial(ctx, ufragB, pwdB)
	if err != nil {
		t.Fatalf("dial: %v (relay stats %+v)", err, srv.Stats())
	}
	rb := <-accepted
	if rb.err != nil {
		t.Fatalf("accept: %v", rb.err)
	}
	connB := rb.conn

	for _, a := range []*ice.Agent{agentA, agentB} {
		pair, err := a.GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("no selected pair: %v", err)
		}
		if pair.Local.Type() != ice.CandidateTypeRelay || pair.Remote.Type() != ice.CandidateTypeRelay {
			t.Errorf("selected pair %s", pair)
		}
		if pair.Local.Address() != public.String() || pair.Remote.Address() != public.String() {
			t.Errorf("relay candidates %s and %s do not carry the public address %s", pair.Local.Address(), pair.Remote.Address(), public)
		}
	}
	exchange := func(from, to *ice.Conn, msg string) {
		t.Helper()
		buf := make([]byte, 1500)
		for i := 0; i < 20; i++ { // datagrams: retry until one arrives
			if _, err := from.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			_ = to.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			n, err := to.Read(buf)
			if err == nil && string(buf[:n]) == msg {
				return
			}
		}
		t.Fatalf("%q never arrived", msg)
	}
	_ = connA.SetReadDeadline(time.Time{})
	for i := range 5 {
		exchange(connA, connB, "a to b "+strconv.Itoa(i))
		exchange(connB, connA, "b to a "+strconv.Itoa(i))
	}
	st := srv.Stats()
	if st.Allocations != 2 || st.InProcess == 0 {
		t.Errorf("stats: %d allocations, %d packets in process", st.Allocations, st.InProcess)
	}
	t.Logf("relay stats: %s", fmt.Sprintf("%+v", st))
}
