package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ErrNoAnswer is returned by Probe when no server answered (over UDP, nor
// over TCP when Client.TCP is set). The Report returned with it is still
// filled in with the evidence.
var ErrNoAnswer = errors.New("nat: no STUN server answered")

// Defaults, and why.
const (
	// DefaultTimeout bounds a probe without lifetime measurement. The slowest
	// path is a silent server: its retransmissions end after about 3.75 s.
	DefaultTimeout = 5 * time.Second
	// defaultRTO is the first retransmission timeout towards a server whose
	// round-trip time is not known yet. RFC 5389 suggests 500 ms for any
	// path; a probe wants an answer sooner and retransmits instead.
	defaultRTO = 250 * time.Millisecond
	// minRTO floors the retransmission timeout once the round-trip time is
	// known, so scheduling jitter on a loaded host is not read as loss.
	minRTO = 30 * time.Millisecond
	// firstGrace is how long, at least, the other servers may take to
	// answer once one has: ten round trips of a far server.
	firstGrace = 500 * time.Millisecond
	// DefaultPort is the STUN port (RFC 5389).
	DefaultPort = 3478
)

// Client probes the NAT between this host and the internet. The zero value
// has no servers; set Servers. A Client is safe for concurrent use; every
// Probe uses fresh sockets.
type Client struct {
	// Servers lists STUN servers as "host:port" or "host" (port 3478). With
	// one RFC 5780 server (two IPs, two ports) every behaviour is measured;
	// with plain servers the mapping behaviour comes from comparing their
	// answers and filtering stays unknown. The first server that proves RFC
	// 5780 support runs the filtering tests.
	Servers []string

	// Network is "udp4" (the default) or "udp6". Servers are resolved in
	// that family only.
	Network string

	// Timeout bounds resolving Servers and the UDP tests, and separately the
	// TCP tests; zero means DefaultTimeout. The ctx given to Probe bounds
	// everything, including the lifetime search.
	Timeout time.Duration

	// RTO optionally sets the first retransmission timeout; zero means 250 ms.
	RTO time.Duration

	// NoHairpin switches off the hairpin test (a second local socket sends
	// one packet to the first socket's public mapping, after the first
	// socket sent one to the second's to open its filter: two packets from
	// inside to the NAT's own public address), which some firewalls log as
	// a LAND attack.
	NoHairpin bool

	// TCP enables the TCP mapping test: several connections from one local
	// port (SO_REUSEPORT) to the server's addresses.
	TCP bool

	// Lifetime enables the UDP mapping lifetime search (it needs an RFC 5780
	// server: it uses RESPONSE-PORT). It takes two to three times the
	// lifetime, or LifetimeMax when mappings outlive that, so it is opt-in.
	Lifetime bool
	// LifetimeMax bounds the lifetime search; zero means 2 minutes.
	LifetimeMax time.Duration
	// LifetimeResolution is the precision the search stops at; zero means
	// an eighth of the longest idle time first seen to keep the mapping
	// (at least one second).
	LifetimeResolution time.Duration
	// LifetimeProgress, if set, is told of each step of the lifetime search
	// as it happens (the search takes minutes; a command line tool shows
	// it). It is called from Probe's goroutine and must not block long.
	LifetimeProgress func(LifetimeStep)

	// ListenPacket optionally opens the probe's UDP sockets; if nil,
	// net.ListenConfig.ListenPacket on an unspecified address and port is
	// used. Every call must return a fresh socket with a new local port.
	ListenPacket func(ctx context.Context, network, address string) (net.PacketConn, error)

	// DialTCP optionally makes the TCP test's connections, all from the
	// local address laddr (empty: any); it must set SO_REUSEADDR and
	// SO_REUSEPORT. If nil, github.com/libp2p/go-reuseport is used.
	DialTCP func(ctx context.Context, network, laddr, raddr string) (net.Conn, error)

	// Resolver optionally resolves server names; if nil, net.DefaultResolver.
	Resolver *net.Resolver

	// Logger optionally specifies where to log; if nil, slog.Default() is used.
	Logger *slog.Logger

	// clock drives the lifetime search; nil means real time. Tests set it.
	clock clock
}

func (c *Client) network() string {
	if c.Network == "udp6" {
		return "udp6"
	}
	return "udp4"
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) rto() time.Duration {
	if c.RTO > 0 {
		return c.RTO
	}
	return defaultRTO
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Client) listen(ctx context.Context) (net.PacketConn, error) {
	addr := "0.0.0.0:0"
	if c.network() == "udp6" {
		addr = "[::]:0"
	}
	if c.ListenPacket != nil {
		return c.ListenPacket(ctx, c.network(), addr)
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, c.network(), addr)
	if err != nil {
		return nil, fmt.Errorf("nat: %w", err)
	}
	return pc, nil
}

// resolve turns Servers into addresses of the client's family, in order,
// without duplicates. Servers that fail are left out and recorded in rec.
func (c *Client) resolve(ctx context.Context, rec *recorder) ([]netip.AddrPort, error) {
	r := c.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	want := "ip4"
	if c.network() == "udp6" {
		want = "ip6"
	}
	var (
		out  []netip.AddrPort
		errs []error
	)
	for _, s := range c.Servers {
		host, portStr, err := net.SplitHostPort(s)
		if err != nil {
			host, portStr = s, strconv.Itoa(DefaultPort)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			errs = append(errs, fmt.Errorf("nat: server %q: bad port", s))
			continue
		}
		var addr netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addr = a.Unmap()
			if addr.Is4() != (want == "ip4") {
				continue
			}
		} else {
			ips, err := r.LookupNetIP(ctx, want, host)
			if err != nil || len(ips) == 0 {
				errs = append(errs, fmt.Errorf("nat: server %q: %w", s, err))
				continue
			}
			addr = ips[0].Unmap()
		}
		ap := netip.AddrPortFrom(addr, uint16(port))
		dup := false
		for _, o := range out {
			dup = dup || o == ap
		}
		if !dup {
			out = append(out, ap)
		}
	}
	for i, err := range errs {
		rec.add(ResolveTest, i, Evidence{Test: ResolveTest, Note: err.Error()})
	}
	if len(out) == 0 {
		if len(errs) == 0 {
			return nil, fmt.Errorf("nat: no %s STUN server configured", want)
		}
		return nil, netcore.Join(errs...)
	}
	return out, nil
}

// Probe measures the NAT. It returns when every test ended or ctx is done;
// it never takes longer than Timeout (twice with TCP, plus about three times
// LifetimeMax with Lifetime). With
// ErrNoAnswer the returned Report still holds the evidence.
func (c *Client) Probe(ctx context.Context) (*Report, error) {
	start := time.Now()
	rec := &recorder{}
	// Resolving the servers counts against the UDP tests' Timeout, so a
	// silent resolver cannot hold Probe past it.
	udpCtx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	servers, err := c.resolve(udpCtx, rec)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	e := newEngine(c.listen)
	defer e.close()

	ev, err := c.probeUDP(udpCtx, e, servers, rec)
	if err != nil {
		return nil, err
	}
	v := classify(ev)
	rep.UDP = v.udp
	rep.Public, rep.Local = v.public, v.local
	rep.BehindNAT = v.behindNAT
	rep.Mapping, rep.Filtering = v.mapping, v.filtering
	rep.Hairpinning = v.hairpinning
	rep.PortPreserved = v.portPreserved
	rep.MappingVariesByServer = v.mappingVariesByServer
	rep.CarrierGradeNAT, rep.DoubleNAT = v.carrierGradeNAT, v.doubleNAT
	rep.Server = v.check
	rep.Confidence = v.confidence
	rep.PortRanges, rep.RestrictedPorts = v.portRanges, v.restrictedPorts
	rep.Loss, rep.LossSamples = ev.loss, ev.lossSamples
	rep.Classic = Classic(v.behindNAT, v.mapping, v.filtering)
	if rep.Classic == "unknown" && v.mappingVariesByServer == Yes {
		rep.Classic = "symmetric"
	}

	if c.TCP {
		tcpCtx, cancel := context.WithTimeout(ctx, c.timeout())
		rep.TCP = c.probeTCP(tcpCtx, ev.plan, ev.first, servers)
		cancel()
	}
	if c.Lifetime && rep.UDP {
		c.probeLifetime(ctx, e, ev.plan, ev.first, rep, rec)
	}
	rep.Probes = rec.sorted()
	rep.InboundIPv4, rep.InboundIPv4Reason = inbound(rep)
	rep.Duration = time.Since(start)
	c.logger().Debug("nat: probe done", "public", rep.Public, "mapping", rep.Mapping,
		"filtering", rep.Filtering, "server", rep.Server.RFC5780, "duration", rep.Duration)
	if !rep.UDP && (rep.TCP == nil || !rep.TCP.Public.IsValid()) {
		return rep, ErrNoAnswer
	}
	return rep, nil
}

// probeUDP runs the UDP tests: phase one binds socket A to every server;
// phase two runs the plan's mapping, filtering and hairpin tests in parallel,
// each filtering test on its own fresh sockets.
func (c *Client) probeUDP(ctx context.Context, e *engine, servers []netip.AddrPort, rec *recorder) (evidence, error) {
	var ev evidence
	a, first, silentOK, err := c.firstBindings(ctx, e, servers, rec)
	if err != nil {
		return ev, err
	}
	// "UDP blocked" must rest on enough lost sends for the loss no answer
	// measured (taken as 50 %): two sockets' firstSends per server can be
	// fewer (8 lost sends at 20 % loss each way come once in 3 600 runs,
	// and were seen once in 300 lab runs). Until there are enough, another
	// round on two fresh sockets.
	for round := 1; silentOK && round*2*firstSends*len(servers) < triesFor(0.5, 0); round++ {
		if a, first, silentOK, err = c.firstBindings(ctx, e, servers, rec); err != nil {
			return ev, err
		}
	}
	ev.first = first
	ev.udpConfirmed = silentOK
	ev.plan = makePlan(ev.first, !c.NoHairpin)
	for _, o := range ev.first {
		if o.answered {
			ev.ports = append(ev.ports, [2]netip.AddrPort{a.effectiveLocal(), o.mapped})
			break
		}
	}
	if ev.plan.hairpin < 0 && ev.plan.rfc < 0 {
		return ev, nil
	}
	// Later tests know the round-trip time: retransmit sooner, and repeat
	// a silent test as often as the loss measured so far asks.
	var rtt time.Duration
	for _, o := range ev.first {
		if o.answered {
			rtt = max(rtt, o.rtt)
		}
	}
	interval := min(max(3*rtt, minRTO), c.rto())
	sp := spaced{interval: interval, tail: 3 * interval, tries: e.triesNeeded}

	translated := true
	if len(ev.ports) > 0 {
		translated = ev.ports[0][0] != ev.ports[0][1]
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	if ev.plan.rfc >= 0 {
		ev.mapping = make([]obs, len(ev.plan.mapping))
		wg.Go(func() {
			var mwg sync.WaitGroup
			for i, dst := range ev.plan.mapping {
				mwg.Go(func() {
					ev.mapping[i] = c.bind(ctx, e, a, dst, request{txid: newTxID()}, sp, rec, mappingTest[i], 0)
				})
			}
			mwg.Wait()
			// Socket A now has a path open from the alternate IP (primary
			// port). If its mapping did not change with the destination, a
			// CHANGE-REQUEST (IP) answer must come through whatever the
			// filtering; if it does not, the server ignores CHANGE-REQUEST
			// and the filtering tests cannot be believed.
			if m := ev.mapping[0]; m.answered && m.mapped == ev.first[ev.plan.rfc].mapped {
				ev.verify = c.verifyChange(ctx, e, a, ev.plan, sp, rec)
			}
		})
		wg.Go(func() {
			ev.filterIPPort = c.filter(ctx, e, ev.plan, true, sp, rec, &mu, &ev.ports)
		})
		wg.Go(func() {
			ev.filterPort = c.filter(ctx, e, ev.plan, false, sp, rec, &mu, &ev.ports)
		})
	}
	if srv := ev.plan.hairpin; translated && (srv >= 0 || ev.plan.rfc >= 0) {
		// Only behind a NAT is the path worth a look.
		if srv < 0 {
			srv = ev.plan.rfc
		}
		ev.hops = make([]netip.Addr, pathHops)
		for i := range pathHops {
			wg.Go(func() {
				ev.hops[i] = c.pathHop(ctx, servers[srv], i+1, 3*sp.tail, rec)
			})
		}
		// A handful of fresh sockets show which public ports the NAT uses.
		dst := servers[srv]
		ev.rangePorts = make([]obs, portRangeSockets)
		for i := range portRangeSockets {
			wg.Go(func() {
				s, err := e.open(ctx)
				if err != nil {
					return
				}
				ev.rangePorts[i] = c.bind(ctx, e, s, dst, request{txid: newTxID()}, sp, rec, PortRangeTest, i)
			})
		}
	}
	if ev.plan.hairpin >= 0 {
		wg.Go(func() {
			ev.hairpin = c.hairpin(ctx, e, a, servers[ev.plan.hairpin], ev.first[ev.plan.hairpin].mapped, sp, rec, &mu, &ev.ports)
		})
	}
	wg.Wait()
	// The hairpin test sends few packets and ran beside the others: its
	// silence is judged by the loss measured over the whole run, which on a
	// clean link has seen enough packets for three silent tries to decide.
	if h := &ev.hairpin; h.ran && !h.answered {
		h.weak = h.cut || h.sent < e.triesNeeded()
	}
	for i := range ev.first {
		ev.first[i].local = a.effectiveLocal()
	}
	if len(ev.ports) > 0 {
		ev.ports[0][0] = a.effectiveLocal()
	}
	for _, o := range ev.rangePorts {
		if o.answered {
			ev.ports = append(ev.ports, [2]netip.AddrPort{o.local, o.mapped})
		}
	}
	ev.loss, ev.lossSamples = e.loss()
	return ev, nil
}

// portRangeSockets is how many extra fresh sockets bind to learn the NAT's
// public port set: with the probe's other sockets about a dozen mappings,
// enough that a NAT picking ports from its whole range cannot look
// restricted by chance.
const portRangeSockets = 8

// firstSends is how many Binding requests each phase-one socket sends to
// each server (RFC 5389's schedule, shortened).
const firstSends = 4

// firstBindings is phase one: a socket binds to every server. When no
// answer came within the first retransmission timeout, a second fresh
// socket starts too ("no UDP" must rest on more than one lost exchange);
// the first socket to be answered becomes socket A. silentOK is true when
// nothing answered and both sockets ran their whole schedule.
func (c *Client) firstBindings(ctx context.Context, e *engine, servers []netip.AddrPort, rec *recorder) (*socket, []obs, bool, error) {
	sch := schedule{rto: c.rto(), sends: firstSends, last: 8}
	// Once one server answered, the others get a grace period, not the
	// whole schedule: one dead server in a list must not stall the probe.
	firstCtx, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	type result struct {
		attempt int
		rtt     time.Duration
	}
	answered := make(chan result, 2*len(servers))
	var (
		mu     sync.Mutex
		winner = -1
		socks  [2]*socket
		obsOf  [2][]obs
		wg     sync.WaitGroup
	)
	// answered has room for every binding's answer, so none blocks.
	start := func(attempt int) error {
		s, err := e.open(ctx)
		if err != nil {
			return err
		}
		socks[attempt] = s
		obsOf[attempt] = make([]obs, len(servers))
		for i, srv := range servers {
			wg.Go(func() {
				o := c.bindSchedule(firstCtx, e, s, srv, request{txid: newTxID()}, sch, rec, BindingTest, attempt*len(servers)+i)
				mu.Lock()
				obsOf[attempt][i] = o
				mu.Unlock()
				if o.answered {
					answered <- result{attempt, o.rtt}
				}
			})
		}
		return nil
	}
	if err := start(0); err != nil {
		return nil, nil, false, err
	}
	var first *result
	second := time.NewTimer(sch.rto)
	select {
	case r := <-answered:
		first = &r
	case <-second.C:
		if err := start(1); err != nil {
			c.logger().Debug("nat: second socket", "err", err)
		}
	case <-ctx.Done():
	}
	second.Stop()
	// No binding starts after this point.
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()
	if first == nil {
		select {
		case r := <-answered:
			first = &r
		case <-allDone:
		}
	}
	if first != nil {
		winner = first.attempt
		grace := time.NewTimer(max(firstGrace, 10*first.rtt))
		select {
		case <-grace.C:
			cancelFirst()
		case <-allDone:
		}
		grace.Stop()
	}
	<-allDone
	mu.Lock()
	defer mu.Unlock()
	w := winner
	if w < 0 {
		w = 0
	}
	silentOK := winner < 0 && socks[1] != nil
	if silentOK {
		for _, os := range obsOf {
			for _, o := range os {
				silentOK = silentOK && o.sent >= sch.sends && !o.cut
			}
		}
	}
	return socks[w], obsOf[w], silentOK, nil
}

var mappingTest = []TestKind{MappingAltIPTest, MappingAltIPPortTest}

// bind runs one Binding transaction from s to dst and records it.
func (c *Client) bind(ctx context.Context, e *engine, s *socket, dst netip.AddrPort, req request, sp spaced, rec *recorder, test TestKind, order int) obs {
	out := e.exchange(ctx, s, s, dst, req, from(dst), false, sp)
	o := toObs(out, s, dst, e)
	rec.add(test, order, probeOf(test, o, req, out))
	return o
}

// bindSchedule is bind on an RFC 5389 schedule (phase one, before the
// round-trip time is known).
func (c *Client) bindSchedule(ctx context.Context, e *engine, s *socket, dst netip.AddrPort, req request, sch schedule, rec *recorder, test TestKind, order int) obs {
	out := e.exchange(ctx, s, s, dst, req, from(dst), false, sch)
	o := toObs(out, s, dst, nil)
	rec.add(test, order, probeOf(test, o, req, out))
	return o
}

// filterSockets is how many fresh sockets run each filtering test: silence
// decides the filtering behaviour, so it must be seen on more than one.
const filterSockets = 2

// filter runs one CHANGE-REQUEST test from filterSockets fresh sockets in
// parallel. On each, a plain Binding (the control) must be answered first;
// then the CHANGE-REQUEST is sent, spaced, until answered or until the
// sockets together made as many tries as the loss measured asks. The
// result is answered if any socket was; otherwise its silence is weak
// unless every control was answered and the tries were enough.
func (c *Client) filter(ctx context.Context, e *engine, p plan, changeIP bool, sp spaced, rec *recorder, mu *sync.Mutex, ports *[][2]netip.AddrPort) obs {
	want := netip.AddrPortFrom(p.primary.Addr(), p.other.Port())
	test := FilteringChangePortTest
	if changeIP {
		want = p.other
		test = FilteringChangeIPPortTest
	}
	// Error responses come from the primary address; accept them from there
	// so a refusal is told apart from silence. A success from there means
	// the server ignored CHANGE-REQUEST: a stray, never an answer.
	accept := func(a netip.AddrPort, m message) bool {
		return (a == want && m.success) || (a == p.primary && !m.success)
	}
	// Each socket makes its share of the tries; the share grows with the
	// loss measured while the test runs.
	share := sp
	share.tries = func() int { return (e.triesNeeded() + filterSockets - 1) / filterSockets }
	results := make([]obs, filterSockets)
	controls := make([]bool, filterSockets)
	var wg sync.WaitGroup
	for i := range filterSockets {
		wg.Go(func() {
			s, err := e.open(ctx)
			if err != nil {
				return
			}
			ctl := c.bind(ctx, e, s, p.primary, request{txid: newTxID()}, sp, rec, FilteringControlTest, int(test)*filterSockets+i)
			if !ctl.answered {
				return
			}
			controls[i] = true
			mu.Lock()
			*ports = append(*ports, [2]netip.AddrPort{s.effectiveLocal(), ctl.mapped})
			mu.Unlock()
			req := request{txid: newTxID(), changeIP: changeIP, changePort: true}
			out := e.exchange(ctx, s, s, p.primary, req, accept, false, share)
			o := toObs(out, s, p.primary, nil)
			o.ran = true
			rec.add(test, i, probeOf(test, o, req, out))
			results[i] = o
		})
	}
	wg.Wait()
	// An answer on one socket while another, whose control was answered,
	// stayed silent through all its tries is a contradiction: on a NAT that
	// lets the answer in, each socket is answered but for loss, and the
	// silent one's tries make that unlikely (0.36^7 at 20 % loss each way).
	// The answer may then come from state the NAT kept for the port (an
	// earlier socket of another process that sent to the other address),
	// so the result is silence, weak: Unknown rather than wrong.
	for i, o := range results {
		if !o.answered {
			continue
		}
		for j, x := range results {
			if j != i && controls[j] && x.ran && !x.answered && x.errorCode == 0 && len(x.strays) == 0 && !x.cut && x.sent >= share.tries() {
				c.logger().Debug("nat: filtering test answered on one socket, silent on another", "test", test, "tries", x.sent)
				return obs{ran: true, server: p.primary, sent: x.sent + o.sent, weak: true}
			}
		}
	}
	var silent obs
	tries, allControls := 0, true
	for i, o := range results {
		allControls = allControls && controls[i]
		if o.answered || o.errorCode != 0 || len(o.strays) > 0 {
			o.ran = true
			return o
		}
		tries += o.sent
		if o.ran && !silent.ran {
			silent = o
		}
		if o.cut {
			allControls = false
		}
	}
	silent.ran = true
	silent.server = p.primary
	silent.sent = tries
	silent.weak = !allControls || tries < e.triesNeeded()
	return silent
}

// verifyChange asks the primary address from socket A to answer from the
// alternate IP, a source A has already sent to.
func (c *Client) verifyChange(ctx context.Context, e *engine, a *socket, p plan, sp spaced, rec *recorder) obs {
	want := p.mapping[0]
	accept := func(src netip.AddrPort, m message) bool {
		return (src == want && m.success) || (src == p.primary && !m.success)
	}
	req := request{txid: newTxID(), changeIP: true}
	out := e.exchange(ctx, a, a, p.primary, req, accept, false, sp)
	o := toObs(out, a, p.primary, e)
	rec.add(VerifyChangeIPTest, 0, probeOf(VerifyChangeIPTest, o, req, out))
	return o
}

// maxHairpinPackets bounds the hairpin test's packets to the NAT's own
// public address: a firewall may log each as a LAND attack. Four is what a
// clean link needs for silence to decide: a probe measures its loss over
// about 21 answered transmissions, and the bound on loss that leaves
// (1/21) makes three silent tries a 1.1e-4 chance, just over silenceRisk.
const maxHairpinPackets = 4

// hairpin binds a second socket to srv, punches socket A's filter towards the
// second socket's mapping, then sends Binding requests from the second
// socket to A's mapping and waits for one on A.
func (c *Client) hairpin(ctx context.Context, e *engine, a *socket, srv, mappedA netip.AddrPort, sp spaced, rec *recorder, mu *sync.Mutex, ports *[][2]netip.AddrPort) obs {
	h, err := e.open(ctx)
	if err != nil {
		return obs{}
	}
	hb := c.bind(ctx, e, h, srv, request{txid: newTxID()}, sp, rec, HairpinBindingTest, 0)
	if !hb.answered {
		return obs{}
	}
	mu.Lock()
	*ports = append(*ports, [2]netip.AddrPort{h.effectiveLocal(), hb.mapped})
	mu.Unlock()
	// The punch opens filters that depend on the remote address; it is a
	// request nobody waits for, so whoever receives it ignores it.
	punch := request{txid: newTxID()}.encode()
	_, _ = a.pc.WriteTo(punch, net.UDPAddrFromAddrPort(hb.mapped))
	req := request{txid: newTxID()}
	// Few test packets (with the punch, at most five to the public address
	// in all): a firewall may log a packet from inside to its own public
	// address as a LAND attack, so the test stays as quiet as it can.
	few := sp
	few.tries = func() int { return min(e.triesNeeded(), maxHairpinPackets) }
	out := e.exchange(ctx, h, a, mappedA, req, anySource, true, few)
	o := toObs(out, h, mappedA, nil)
	o.ran = true
	o.weak = !out.answered && (out.cut || out.sent < e.triesNeeded())
	p := probeOf(HairpinTest, o, req, out)
	if out.answered {
		p.Note = fmt.Sprintf("arrived at %v from %v", a.effectiveLocal(), out.arrival.from)
	}
	rec.add(HairpinTest, 0, p)
	return o
}

// pathHops is how many hops the path test looks at: a home router, a
// carrier-grade NAT behind it, and one more for a NAT in a modem.
const pathHops = 3

// pathHop finds the router ttl hops away from a fresh socket (ICMP Time
// Exceeded), for the carrier-grade NAT hint.
func (c *Client) pathHop(ctx context.Context, dst netip.AddrPort, ttl int, wait time.Duration, rec *recorder) netip.Addr {
	if c.network() != "udp4" {
		return netip.Addr{}
	}
	pc, err := c.listen(ctx)
	if err != nil {
		return netip.Addr{}
	}
	defer pc.Close()
	hop := traceHop(ctx, pc, dst, ttl, wait)
	p := Evidence{Test: PathTest, Local: netcore.AddrPort(pc.LocalAddr()), Server: dst, Sent: 1, Answered: hop.IsValid()}
	if hop.IsValid() {
		p.From = netip.AddrPortFrom(hop, 0)
		p.Note = fmt.Sprintf("TTL %d: time exceeded from %v", ttl, hop)
	} else {
		p.Note = fmt.Sprintf("TTL %d: no time exceeded", ttl)
	}
	rec.add(PathTest, ttl, p)
	return hop
}

// toObs turns an outcome into an observation. With e set, an unanswered
// outcome is weak evidence unless it made the tries the loss measured asks.
func toObs(out outcome, s *socket, dst netip.AddrPort, e *engine) obs {
	o := obs{ran: true, answered: out.answered, local: s.effectiveLocal(), server: dst, strays: out.strays, rtt: out.rtt,
		sent: out.sent, cut: out.cut}
	if !out.answered && e != nil {
		o.weak = out.cut || out.sent < e.triesNeeded()
	}
	if out.answered {
		m := out.arrival.msg
		o.mapped, o.from, o.origin, o.other = m.mapped, out.arrival.from, m.origin, m.other
		if !m.success && !m.request {
			o.answered = false
			o.errorCode = m.errorCode
			if o.errorCode == 0 {
				o.errorCode = 400
			}
		}
	}
	return o
}

func probeOf(test TestKind, o obs, req request, out outcome) Evidence {
	return Evidence{
		Test: test, Local: o.local, Server: o.server,
		ChangeIP: req.changeIP, ChangePort: req.changePort,
		Answered: o.answered, Mapped: o.mapped, From: o.from, Origin: o.origin, Other: o.other,
		ErrorCode: o.errorCode, Stray: o.strays, Sent: out.sent, RTT: out.rtt,
	}
}

// recorder collects evidence from concurrent tests and orders it by plan
// (TestKind order, then order within a test).
type recorder struct {
	mu     sync.Mutex
	probes []recorded
}

type recorded struct {
	rank  int
	order int
	p     Evidence
}

func (r *recorder) add(test TestKind, order int, p Evidence) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probes = append(r.probes, recorded{int(test), order, p})
}

func (r *recorder) sorted() []Evidence {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Evidence, 0, len(r.probes))
	rs := slices.Clone(r.probes)
	slices.SortStableFunc(rs, func(a, b recorded) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return a.order - b.order
	})
	for _, x := range rs {
		out = append(out, x.p)
	}
	return out
}
