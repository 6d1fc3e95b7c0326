package nat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-reuseport"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
)

// Ports inside the lab's own Server namespace, where nothing else listens.
const (
	labPort, labAltPort       = 3478, 3479
	coturnPort, coturnAltPort = 13478, 13479
)

// labServer runs our RFC 5780 server (UDP and TCP) on the lab's Server host.
func labServer(t testing.TB, lab *natlab.Lab) netip.AddrPort {
	t.Helper()
	a1, a2 := lab.ServerAddrs()
	s := &Server{Primary: netip.AddrPortFrom(a1, labPort), Alternate: netip.AddrPortFrom(a2, labAltPort)}
	four := fourAddrs(s.Primary, s.Alternate)
	var pcs [4]net.PacketConn
	var lns [4]net.Listener
	for i, a := range four {
		pc, err := lab.ListenPacket(natlab.Server, "udp4", a.String())
		if err != nil {
			t.Fatal(err)
		}
		pcs[i] = pc
		l, err := lab.Listen(natlab.Server, "tcp4", a.String())
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = l
	}
	errs := make(chan error, 5)
	go func() { errs <- s.ServeRFC5780(pcs[0], pcs[1], pcs[2], pcs[3]) }()
	for _, l := range lns {
		go func() { errs <- s.Serve(l) }()
	}
	t.Cleanup(func() {
		s.Close()
		for range 5 {
			if err := <-errs; !errors.Is(err, ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return s.Primary
}

// labClient is a Client whose sockets live on host.
func labClient(lab *natlab.Lab, host natlab.Host, server netip.AddrPort) *Client {
	return &Client{
		Servers: []string{server.String()},
		ListenPacket: func(_ context.Context, network, addr string) (net.PacketConn, error) {
			return lab.ListenPacket(host, network, addr)
		},
		DialTCP: func(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
			var c net.Conn
			err := lab.Do(host, func() error {
				d := net.Dialer{Control: reuseport.Control}
				if laddr != "" {
					la, err := net.ResolveTCPAddr(network, laddr)
					if err != nil {
						return err
					}
					d.LocalAddr = la
				}
				var err error
				c, err = d.DialContext(ctx, network, raddr)
				return err
			})
			return c, err
		},
	}
}

// checkTruth compares a report with the lab's ground truth.
func checkTruth(t *testing.T, who string, lab *natlab.Lab, rep *Report, err error) {
	t.Helper()
	k := lab.Config().Kind
	if k == natlab.UDPBlocked {
		if rep.UDP || rep.Mapping != BehaviorUnknown || rep.Filtering != BehaviorUnknown || rep.Hairpinning != Unknown {
			t.Errorf("%s: UDP blocked, but report says udp=%v mapping %v filtering %v hairpin %v", who, rep.UDP, rep.Mapping, rep.Filtering, rep.Hairpinning)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	fail := func(what string, got, want any) {
		t.Errorf("%s: %s %v, ground truth %v", who, what, got, want)
	}
	if rep.Mapping.String() != k.Mapping().String() {
		fail("mapping", rep.Mapping, k.Mapping())
	}
	if rep.Filtering.String() != k.Filtering().String() {
		fail("filtering", rep.Filtering, k.Filtering())
	}
	if rep.Hairpinning != answerOf(lab.Hairpins()) {
		fail("hairpinning", rep.Hairpinning, lab.Hairpins())
	}
	// On a clean link every verdict is confirmed, hairpinning too (before,
	// a NAT without hairpin was reported No but Unconfirmed: the test sends
	// three packets, and the loss bound measured while it ran wanted four).
	if lab.Config().Loss == 0 && rep.Confidence.Hairpinning != Confirmed {
		fail("hairpinning confidence", rep.Confidence.Hairpinning, Confirmed)
	}
	if rep.BehindNAT != answerOf(k != natlab.NoNAT) {
		fail("behind NAT", rep.BehindNAT, k != natlab.NoNAT)
	}
	if rep.Public.Addr() != lab.PublicAddr() {
		fail("public address", rep.Public, lab.PublicAddr())
	}
	if rep.Server.RFC5780 != Supported {
		fail("server check", rep.Server, Supported)
	}
	// Masquerade and 1:1 NAT keep the source port when it is free, as it is
	// in a lab; fully-random masquerade (Symmetric) picks a new one.
	if want := answerOf(k != natlab.Symmetric); rep.PortPreserved != want {
		fail("port preserved", rep.PortPreserved, want)
	}
	if want := answerOf(k == natlab.Symmetric); rep.MappingVariesByServer != want {
		fail("mapping varies by server IP", rep.MappingVariesByServer, want)
	}
	if t.Failed() {
		for _, p := range rep.Probes {
			t.Logf("%s probe: %+v", who, p)
		}
	}
}

// labConcurrency is how many labs run at once: they mostly wait on
// timeouts (natdiscovery's negative tests), not on the CPU.
const labConcurrency = 4

type labCase struct {
	name string
	f    func(t *testing.T)
}

// runCases runs cases as subtests of t, limit at a time. Subtests run from
// goroutines (allowed by testing) rather than with t.Parallel, so that
// -parallel, which is sized for CPU-bound tests, does not serialise labs.
func runCases(t *testing.T, limit int, cases []labCase) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			t.Run(c.name, c.f)
		})
	}
	wg.Wait()
}

// TestLab checks, for every NAT kind of the lab, our client against our
// server and against coturn, and coturn's natdiscovery against our server,
// with the kind's ground truth; and the same over IPv6 (no NAT, firewall).
func TestLab(t *testing.T) {
	interop.NeedRoot(t)
	t.Parallel()
	var cases []labCase
	for _, k := range natlab.Kinds() {
		for _, hairpin := range []bool{false, true} {
			if hairpin && k.Hairpins(true) == k.Hairpins(false) {
				continue // the same lab as without
			}
			cases = append(cases, labCase{fmt.Sprintf("%v/hairpin=%v", k, hairpin), func(t *testing.T) {
				lab := natlab.New(t, natlab.Config{Kind: k, Hairpin: hairpin})
				srv := labServer(t, lab)
				c := labClient(lab, natlab.LAN1, srv)
				c.TCP = true
				c.Timeout = 3 * time.Second
				rep, err := c.Probe(t.Context())
				checkTruth(t, "our client vs our server", lab, rep, err)
				if k != natlab.UDPBlocked {
					// The goal: a full UDP report in under a second. A loaded
					// CI host may stall a goroutine now and then, so one slow
					// run is retried; two are a failure.
					udp := labClient(lab, natlab.LAN1, srv)
					for try := 1; ; try++ {
						r, err := udp.Probe(t.Context())
						if err != nil {
							t.Fatal(err)
						}
						if r.Duration < time.Second {
							break
						}
						if try == 2 {
							t.Errorf("UDP report took %v, want < 1s", r.Duration)
							break
						}
						t.Logf("UDP report took %v; trying again", r.Duration)
					}
				}
				if rep.TCP == nil || rep.TCP.Public.Addr() != lab.PublicAddr() {
					t.Errorf("TCP report %+v, want public %v", rep.TCP, lab.PublicAddr())
				} else if want := tcpMapping(k); rep.TCP.Mapping.String() != want.String() {
					t.Errorf("TCP mapping %v, want %v", rep.TCP.Mapping, want)
				}
				if want := answerOf(k == natlab.DoubleNAT); k != natlab.UDPBlocked && (rep.CarrierGradeNAT == Yes) != (want == Yes) {
					t.Errorf("carrier-grade NAT hint %v for %v", rep.CarrierGradeNAT, k)
				}
				if k == natlab.DoubleNAT && rep.DoubleNAT != Yes {
					t.Errorf("double NAT hint %v for DoubleNAT", rep.DoubleNAT)
				}
				t.Logf("%v: %s, mapping %v, filtering %v, hairpin %v, tcp %v, in %v",
					k, rep.Classic, rep.Mapping, rep.Filtering, rep.Hairpinning, rep.TCP.Mapping, rep.Duration.Round(time.Millisecond))
				labCoturn(t, lab, k)
			}})
		}
	}
	cases = append(cases, ipv6Cases()...)
	runCases(t, labConcurrency, cases)
}

// labCoturn checks our client against coturn and coturn's natdiscovery
// against our server, in the same lab.
func labCoturn(t *testing.T, lab *natlab.Lab, k natlab.Kind) {
	paths := interop.Need(t, "turnserver", "turnutils_natdiscovery")
	a1, a2 := lab.ServerAddrs()
	cmd := lab.Command(natlab.Server, paths["turnserver"], coturnArgs(t.TempDir(), a1, a2, coturnPort, coturnAltPort)...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := lab.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cot := netip.AddrPortFrom(a1, coturnPort)
	if err := waitSTUN(ctx, func() (net.PacketConn, error) {
		return lab.ListenPacket(natlab.Server, "udp4", netip.AddrPortFrom(a2, 0).String())
	}, cot); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	c := labClient(lab, natlab.LAN1, cot)
	c.Timeout = 3 * time.Second
	rep, err := c.Probe(t.Context())
	checkTruth(t, "our client vs coturn", lab, rep, err)

	if k == natlab.UDPBlocked {
		return // natdiscovery has nothing to find and would wait long for it
	}
	ctx, cancel = context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// -L binds natdiscovery to LAN1's address, so that it can tell "no NAT".
	nd, err := lab.CommandContext(ctx, natlab.LAN1, paths["turnutils_natdiscovery"], "-m", "-f", "-H",
		"-L", lab.Addr(natlab.LAN1).String(), "-p", strconv.Itoa(labPort), a1.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("natdiscovery: %v\n%s", err, nd)
	}
	text := string(nd)
	mapping, filtering := natdiscoveryResult(text)
	if mapping.String() != k.Mapping().String() || filtering.String() != k.Filtering().String() {
		t.Errorf("natdiscovery vs our server: mapping %v filtering %v, ground truth %v %v\n%s",
			mapping, filtering, k.Mapping(), k.Filtering(), nd)
	}
	if hairpin := strings.Contains(text, "Received a request (maybe a successful hairpinning)"); hairpin != lab.Hairpins() {
		t.Errorf("natdiscovery vs our server: hairpinning %v, ground truth %v\n%s", hairpin, lab.Hairpins(), nd)
	}
	if noNAT := strings.Contains(text, "No NAT!"); noNAT != (k == natlab.NoNAT) {
		t.Errorf("natdiscovery vs our server: no NAT %v, ground truth %v\n%s", noNAT, k == natlab.NoNAT, nd)
	}
}

// tcpMapping is the TCP mapping ground truth: masquerade and 1:1 NAT treat
// TCP as they treat UDP, and UDPBlocked masquerades TCP.
func tcpMapping(k natlab.Kind) natlab.Behavior {
	if k == natlab.UDPBlocked {
		return natlab.EndpointIndependent
	}
	return k.Mapping()
}

// TestLabLifetime measures the mapping lifetime of a router whose conntrack
// UDP timeout is 12 s. It takes about half a minute (20 s: about a minute).
func TestLabLifetime(t *testing.T) {
	if testing.Short() {
		t.Skip("long test (about half a minute): mapping lifetime search")
	}
	interop.NeedRoot(t)
	t.Parallel()
	const timeout = 12 * time.Second
	lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted, UDPTimeout: timeout})
	srv := labServer(t, lab)
	c := labClient(lab, natlab.LAN1, srv)
	c.Lifetime = true
	c.LifetimeMax = 2 * timeout
	c.LifetimeResolution = 2 * time.Second
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Probes {
		if p.Test == LifetimeTest && p.Note != "" {
			t.Log(p.Note)
		}
	}
	// The kernel expires an entry on the first packet after its timeout, and
	// a check takes a few milliseconds: allow one resolution step either way.
	if rep.MappingLifetime > timeout || rep.MappingExpired < timeout-time.Second ||
		rep.MappingExpired-rep.MappingLifetime > c.LifetimeResolution {
		t.Errorf("lifetime [%v, %v], router timeout %v", rep.MappingLifetime, rep.MappingExpired, timeout)
	}
	if rep.SuggestedKeepalive <= 0 || rep.SuggestedKeepalive >= timeout {
		t.Errorf("suggested keepalive %v for a %v lifetime", rep.SuggestedKeepalive, timeout)
	}
	t.Logf("lifetime [%v, %v], keepalive %v, probe took %v", rep.MappingLifetime, rep.MappingExpired, rep.SuggestedKeepalive, rep.Duration)
}

// ipv6Cases: without NAT, IPv6 home routers still filter. Our client must
// report no NAT, endpoint-independent mapping and the firewall's filtering.
func ipv6Cases() []labCase {
	var cases []labCase
	for _, k := range []natlab.Kind{natlab.NoNAT, natlab.PortRestricted, natlab.Symmetric, natlab.UDPBlocked} {
		cases = append(cases, labCase{"IPv6/" + k.String(), func(t *testing.T) {
			lab := natlab.New(t, natlab.Config{Kind: k, IPv6: true})
			s6 := lab.Addrs6(natlab.Server)
			s := &Server{}
			var pcs [4]net.PacketConn
			for i, a := range [4]netip.AddrPort{
				netip.AddrPortFrom(s6[0], labPort), netip.AddrPortFrom(s6[0], labAltPort),
				netip.AddrPortFrom(s6[1], labPort), netip.AddrPortFrom(s6[1], labAltPort),
			} {
				pc, err := lab.ListenPacket(natlab.Server, "udp6", a.String())
				if err != nil {
					t.Fatal(err)
				}
				pcs[i] = pc
			}
			done := make(chan error, 1)
			go func() { done <- s.ServeRFC5780(pcs[0], pcs[1], pcs[2], pcs[3]) }()
			t.Cleanup(func() { s.Close(); <-done })
			c := labClient(lab, natlab.LAN1, netip.AddrPortFrom(s6[0], labPort))
			c.Network = "udp6"
			c.Timeout = 3 * time.Second
			rep, err := c.Probe(t.Context())
			if k == natlab.UDPBlocked {
				if !errors.Is(err, ErrNoAnswer) || rep.Filtering != BehaviorUnknown {
					t.Errorf("UDP blocked over IPv6: err %v, filtering %v", err, rep.Filtering)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.BehindNAT != No || rep.Mapping != EndpointIndependent || rep.Public.Addr() != lab.Addr6(natlab.LAN1) ||
				rep.Filtering.String() != k.IPv6Filtering().String() {
				for _, p := range rep.Probes {
					t.Logf("probe %+v", p)
				}
				t.Errorf("IPv6 %v: behindNAT %v mapping %v filtering %v (truth %v) public %v (LAN1 %v)",
					k, rep.BehindNAT, rep.Mapping, rep.Filtering, k.IPv6Filtering(), rep.Public, lab.Addr6(natlab.LAN1))
			}
			t.Logf("IPv6 %v: %s, filtering %v, in %v", k, rep.Classic, rep.Filtering, rep.Duration.Round(time.Millisecond))
		}})
	}
	return cases
}
