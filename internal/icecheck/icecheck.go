// Package icecheck connects two pion/ice agents living in NAT lab hosts
// through a TURN relay, the way two WebRTC peers would, and checks that data
// flows both ways. Tests of the relay and of the gateway share it.
//
// Typical usage:
//
//	lab := natlab.New(t, natlab.Config{Kind: natlab.Symmetric, SiteB: natlab.Symmetric, ...})
//	res := icecheck.Relayed(t, lab,
//		icecheck.Peer{Host: natlab.LAN2, TURN: "192.168.1.10:3478", Username: u1, Password: p1},
//		icecheck.Peer{Host: natlab.SiteBLAN, TURN: "203.0.113.2:3478", Username: u2, Password: p2})
//	// res.LocalA, res.LocalB: the relayed addresses each agent ended up using.
package icecheck

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/natlab"
	"github.com/pion/ice/v2"
	pstun "github.com/pion/stun"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// hostNet is a pion transport.Net whose sockets live in one lab host.
type hostNet struct {
	*stdnet.Net
	lab  *natlab.Lab
	host natlab.Host
}

// Net returns a pion transport.Net whose sockets are opened inside host.
func Net(t testing.TB, lab *natlab.Lab, host natlab.Host) transport.Net {
	t.Helper()
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	return &hostNet{Net: std, lab: lab, host: host}
}

func (n *hostNet) ListenPacket(network, address string) (net.PacketConn, error) {
	return n.lab.ListenPacket(n.host, network, address)
}

func (n *hostNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
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

func (n *hostNet) DialUDP(network string, laddr, raddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.lab.Dial(context.Background(), n.host, network, raddr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

func (n *hostNet) Dial(network, address string) (net.Conn, error) {
	return n.lab.Dial(context.Background(), n.host, network, address)
}

// Peer is one side of the call: the lab host its agent lives in, and the
// TURN server ("ip:port", UDP) and credentials it uses.
type Peer struct {
	Host     natlab.Host
	TURN     string
	Username string
	Password string
}

// Result is what the connected agents selected.
type Result struct {
	// LocalA and LocalB are the addresses ("ip") of the relay candidates
	// agent A and agent B use.
	LocalA, LocalB string
}

// Relayed connects two relay-only agents (no host or server-reflexive
// candidates, so the relay is the only path), checks that the selected pair
// is relay to relay, and exchanges five datagrams each way. It fails t on
// any problem and returns the selected addresses.
func Relayed(t testing.TB, lab *natlab.Lab, a, b Peer) Result {
	t.Helper()
	agentA := newAgent(t, lab, a)
	agentB := newAgent(t, lab, b)
	trickle(t, agentA, agentB)
	trickle(t, agentB, agentA)
	ufragA, pwdA, err := agentA.GetLocalUserCredentials()
	if err != nil {
		t.Fatal(err)
	}
	ufragB, pwdB, err := agentB.GetLocalUserCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if err := agentA.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	if err := agentB.GatherCandidates(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	type accepted struct {
		conn *ice.Conn
		err  error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := agentB.Accept(ctx, ufragA, pwdA)
		acc <- accepted{c, err}
	}()
	connA, err := agentA.Dial(ctx, ufragB, pwdB)
	if err != nil {
		cancel()
		<-acc
		t.Fatalf("icecheck: dial: %v", err)
	}
	rb := <-acc
	if rb.err != nil {
		t.Fatalf("icecheck: accept: %v", rb.err)
	}
	connB := rb.conn

	var res Result
	for i, ag := range []*ice.Agent{agentA, agentB} {
		pair, err := ag.GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("icecheck: no selected pair: %v", err)
		}
		if pair.Local.Type() != ice.CandidateTypeRelay || pair.Remote.Type() != ice.CandidateTypeRelay {
			t.Errorf("icecheck: selected pair %s is not relay to relay", pair)
		}
		if i == 0 {
			res.LocalA = pair.Local.Address()
		} else {
			res.LocalB = pair.Local.Address()
		}
	}
	for i := range 5 {
		exchange(t, connA, connB, "a to b "+strconv.Itoa(i))
		exchange(t, connB, connA, "b to a "+strconv.Itoa(i))
	}
	return res
}

func newAgent(t testing.TB, lab *natlab.Lab, p Peer) *ice.Agent {
	t.Helper()
	u, err := pstun.ParseURI("turn:" + p.TURN + "?transport=udp")
	if err != nil {
		t.Fatalf("icecheck: TURN address %q: %v", p.TURN, err)
	}
	u.Username, u.Password = p.Username, p.Password
	// Long enough for a loaded CI machine, short enough to fail in time.
	fail := 10 * time.Second
	a, err := ice.NewAgent(&ice.AgentConfig{
		Urls:             []*pstun.URI{u},
		NetworkTypes:     []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:   []ice.CandidateType{ice.CandidateTypeRelay},
		MulticastDNSMode: ice.MulticastDNSModeDisabled,
		FailedTimeout:    &fail,
		Net:              Net(t, lab, p.Host),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// trickle hands every candidate from gathers to to, as signalling would.
func trickle(t testing.TB, from, to *ice.Agent) {
	t.Helper()
	err := from.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			return
		}
		rc, err := ice.UnmarshalCandidate(c.Marshal())
		if err == nil {
			err = to.AddRemoteCandidate(rc)
		}
		if err != nil {
			t.Errorf("icecheck: candidate %s: %v", c, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// exchange sends msg until it arrives (datagrams may be lost while the path
// settles), at most 20 times.
func exchange(t testing.TB, from, to *ice.Conn, msg string) {
	t.Helper()
	buf := make([]byte, 1500)
	for range 20 {
		if _, err := from.Write([]byte(msg)); err != nil {
			t.Fatalf("icecheck: write: %v", err)
		}
		_ = to.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, err := to.Read(buf)
		if err == nil && string(buf[:n]) == msg {
			return
		}
	}
	t.Fatalf("icecheck: %q never arrived", msg)
}
