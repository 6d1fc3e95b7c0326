package nat

import (
	"context"
	"crypto/rand"
	"errors"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// schedule is an RFC 5389 retransmission schedule: send at 0, rto, 3·rto,
// 7·rto … (doubling) up to sends times, then wait last·rto after the final
// send. Its total is bounded: rto·(2^sends - 1 + last - 2^(sends-1)).
type schedule struct {
	rto   time.Duration
	sends int
	last  int
}

// total is the longest a transaction with this schedule can take.
func (s schedule) total() time.Duration {
	var d, r time.Duration = 0, s.rto
	for i := 1; i < s.sends; i++ {
		d += r
		r *= 2
	}
	return d + time.Duration(s.last)*s.rto
}

// engine runs transactions over a set of sockets. Each socket has one reader
// goroutine that hands arrivals to the transaction with the same ID; close
// stops the readers and waits for them.
type engine struct {
	listen func(ctx context.Context) (net.PacketConn, error)

	mu      sync.Mutex
	pending map[txID]*tx
	socks   []*socket
	wg      sync.WaitGroup
	closed  bool
	// sent and lost count the transmissions of answered exchanges and how
	// many of them went unanswered (every send before the answering one):
	// the loss the probe sees.
	sent, lost int
	// late holds answered exchanges that retransmitted: a second answer to
	// one means a transmission counted lost was only slow (an answer
	// outrun by a retransmission under load), so it is taken back.
	late map[txID]*lateTx
}

// lateTx is an answered exchange whose earlier transmissions were counted
// lost; left is how many of them a late answer can still take back.
type lateTx struct {
	recvOn *socket
	accept func(netip.AddrPort, message) bool
	left   int
}

// noteLossLocked records an answered exchange that took sent
// transmissions: every send but one counts lost, less the answers that
// arrived beyond the first, and an exchange with losses left stays in
// e.late so later duplicates take them back. The caller holds e.mu.
func (e *engine) noteLossLocked(t *tx, sent int) {
	if sent <= 0 {
		return
	}
	lost := max(sent-1-max(t.answers-1, 0), 0)
	e.sent += sent
	e.lost += lost
	if lost > 0 {
		e.late[t.id] = &lateTx{recvOn: t.recvOn, accept: t.accept, left: lost}
	}
}

// loss returns the measured loss and the transmissions it rests on.
func (e *engine) loss() (float64, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sent == 0 {
		return 0, 0
	}
	return float64(e.lost) / float64(e.sent), e.sent
}

// Silence is weak evidence: a test whose answer would decide a verdict
// only counts as unanswered after so many spaced tries that, at the loss
// measured (an upper bound of it), losing all of them by chance has a
// probability under silenceRisk.
const (
	silenceRisk = 1e-4
	// minTries and maxTries bound the tries a silent test makes: two even
	// on a perfect link, and not so many that a very lossy one stalls the
	// probe past its Timeout (the deadline also stops it).
	minTries = 2
	maxTries = 24
)

// triesNeeded is how many unanswered tries make silence confirmed at the
// loss measured so far: log(silenceRisk)/log(p), with p an upper bound of
// the loss (the measured rate plus two standard errors plus 1/n, so a few
// lucky answers do not read as a clean link).
func (e *engine) triesNeeded() int {
	p, n := e.loss()
	return triesFor(p, n)
}

func triesFor(p float64, n int) int {
	up := 0.5 // nothing measured yet
	if n > 0 {
		up = p + 2*math.Sqrt(p*(1-p)/float64(n)) + 1/float64(n)
	}
	up = min(up, 0.9)
	k := int(math.Ceil(math.Log(silenceRisk) / math.Log(up)))
	return min(max(k, minTries), maxTries)
}

type socket struct {
	pc    net.PacketConn
	local netip.AddrPort // as bound; its IP may be unspecified
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
	// borrowed sockets belong to the caller: close leaves them open.
	borrowed bool

	mu  sync.Mutex
	dst netip.Addr // local IP an answer was delivered to, from control messages
}

// effectiveLocal is the socket's address as the network sees it before any
// NAT: the delivery IP of answers when known, else the bound address.
func (s *socket) effectiveLocal() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dst.IsValid() {
		return netip.AddrPortFrom(s.dst.Unmap(), s.local.Port())
	}
	return s.local
}

// tx is one pending transaction.
type tx struct {
	id     txID
	recvOn *socket
	// accept decides whether an arrival from this source is the answer.
	accept      func(from netip.AddrPort, m message) bool
	wantRequest bool
	ch          chan arrival
	// answers counts the acceptable arrivals (under engine.mu): more than
	// one means a retransmission was answered too.
	answers int

	mu     sync.Mutex
	strays []netip.AddrPort
}

type arrival struct {
	msg  message
	from netip.AddrPort
	at   time.Time
}

var errEngineClosed = errors.New("nat: probe finished")

func newEngine(listen func(ctx context.Context) (net.PacketConn, error)) *engine {
	return &engine{listen: listen, pending: map[txID]*tx{}, late: map[txID]*lateTx{}}
}

// open makes a fresh socket and starts its reader. Its local port is one no
// probe of this process used within portQuarantine: a NAT keeps a mapping,
// and the filter state of every address the old socket sent to, for
// minutes, and a new socket on the same port inherits them. In the lab at
// 20 % loss each way that made 2 of 300 address-restricted runs read as
// endpoint-independent filtering: the filtering test's fresh socket had
// the port of an earlier mapping test's socket, which had sent to the
// server's other address.
func (e *engine) open(ctx context.Context) (*socket, error) {
	var held []net.PacketConn // kept bound, so the next listen gets another port
	defer func() {
		for _, pc := range held {
			pc.Close()
		}
	}()
	for {
		pc, err := e.listen(ctx)
		if err != nil {
			return nil, err
		}
		port := netcore.AddrPort(pc.LocalAddr()).Port()
		if recentPorts.claim(port, time.Now()) || len(held) >= maxPortRetries ||
			(len(held) > 0 && netcore.AddrPort(held[len(held)-1].LocalAddr()).Port() == port) {
			// Fresh, or the listener always binds this port (the
			// caller chose it), or no fresh one came: use it.
			return e.add(pc, false)
		}
		held = append(held, pc)
	}
}

// portQuarantine is how long a local port used by a probe is not used for a
// fresh socket again: longer than the UDP mapping lifetime of common NATs
// (30 s to 3 min; RFC 4787 asks for at least 2 min).
const portQuarantine = 5 * time.Minute

// maxPortRetries bounds the binds open makes to find a fresh port.
const maxPortRetries = 16

// recentPorts holds the local ports the probes of this process used.
var recentPorts = portLedger{used: map[uint16]time.Time{}}

type portLedger struct {
	mu   sync.Mutex
	used map[uint16]time.Time
}

// claim marks port used at now and reports whether it was fresh: not used
// within portQuarantine. Port 0 (not known) is always fresh.
func (l *portLedger) claim(port uint16, now time.Time) bool {
	if port == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.used) > 4096 {
		for p, t := range l.used {
			if now.Sub(t) >= portQuarantine {
				delete(l.used, p)
			}
		}
	}
	t, seen := l.used[port]
	l.used[port] = now
	return !seen || now.Sub(t) >= portQuarantine
}

// adopt reads pc, a socket the caller owns, as one of the engine's: close
// stops its reader without closing it. Its socket options are left as they
// are (no delivery-address control messages).
func (e *engine) adopt(pc net.PacketConn) (*socket, error) {
	return e.add(pc, true)
}

func (e *engine) add(pc net.PacketConn, borrowed bool) (*socket, error) {
	s := &socket{pc: pc, local: netcore.AddrPort(pc.LocalAddr()), borrowed: borrowed}
	switch {
	case borrowed:
	case s.local.Addr().Is4() || s.local.Addr().Is4In6():
		s.p4 = ipv4.NewPacketConn(pc)
		if s.p4.SetControlMessage(ipv4.FlagDst, true) != nil {
			s.p4 = nil
		}
	default:
		s.p6 = ipv6.NewPacketConn(pc)
		if s.p6.SetControlMessage(ipv6.FlagDst, true) != nil {
			s.p6 = nil
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		if !borrowed {
			pc.Close()
		}
		return nil, errEngineClosed
	}
	e.socks = append(e.socks, s)
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		e.read(s)
	}()
	return s, nil
}

func (e *engine) read(s *socket) {
	buf := make([]byte, 1600)
	for {
		var (
			n    int
			addr net.Addr
			dst  net.IP
			err  error
		)
		switch {
		case s.p4 != nil:
			var cm *ipv4.ControlMessage
			n, cm, addr, err = s.p4.ReadFrom(buf)
			if cm != nil {
				dst = cm.Dst
			}
		case s.p6 != nil:
			var cm *ipv6.ControlMessage
			n, cm, addr, err = s.p6.ReadFrom(buf)
			if cm != nil {
				dst = cm.Dst
			}
		default:
			n, addr, err = s.pc.ReadFrom(buf)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP port unreachable and the like: keep reading until closed.
			if e.isClosed() {
				return
			}
			continue
		}
		from := netcore.AddrPort(addr)
		msg, err := parseMessage(buf[:n])
		if err != nil {
			continue
		}
		e.mu.Lock()
		t := e.pending[msg.txid]
		if t == nil {
			e.takeBackLocked(msg.txid, s, from, msg)
		}
		e.mu.Unlock()
		if t == nil {
			continue
		}
		if t.recvOn != s || msg.request != t.wantRequest || !t.accept(from, msg) {
			t.mu.Lock()
			if len(t.strays) < 8 && !slices.Contains(t.strays, from) {
				t.strays = append(t.strays, from)
			}
			t.mu.Unlock()
			continue
		}
		if a, ok := netip.AddrFromSlice(dst); ok && !msg.request {
			s.mu.Lock()
			s.dst = a.Unmap()
			s.mu.Unlock()
		}
		e.mu.Lock()
		if e.pending[t.id] == t {
			t.answers++
		} else {
			// The exchange ended between the lookup above and now, and
			// counted its loss without this answer.
			e.takeBackLocked(t.id, s, from, msg)
		}
		e.mu.Unlock()
		select {
		case t.ch <- arrival{msg: msg, from: from, at: time.Now()}:
		default:
		}
	}
}

// takeBackLocked credits an answer on s to an ended exchange whose earlier
// transmissions were counted lost: it was only slow. The caller holds e.mu.
func (e *engine) takeBackLocked(id txID, s *socket, from netip.AddrPort, msg message) {
	if l := e.late[id]; l != nil && l.left > 0 && l.recvOn == s && !msg.request && l.accept(from, msg) {
		l.left--
		e.lost--
	}
}

func (e *engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// close closes every socket and waits for the readers.
func (e *engine) close() {
	e.mu.Lock()
	e.closed = true
	socks := e.socks
	e.mu.Unlock()
	for _, s := range socks {
		if s.borrowed {
			_ = s.pc.SetReadDeadline(time.Unix(1, 0))
		} else {
			s.pc.Close()
		}
	}
	e.wg.Wait()
	for _, s := range socks {
		if s.borrowed {
			_ = s.pc.SetReadDeadline(time.Time{})
		}
	}
}

func newTxID() txID {
	var id txID
	_, _ = rand.Read(id[:])
	return id
}

// outcome is the result of one transaction.
type outcome struct {
	answered bool
	arrival  arrival
	sent     int
	rtt      time.Duration
	strays   []netip.AddrPort
	// cut is true when ctx ended the exchange before its tries did.
	cut bool
}

// retransmitPlan says how long to wait for an answer after the sent-th send
// and whether that send is the last one. A plan is asked again when a last
// wait ends unanswered, so a plan whose tries depend on the loss measured
// meanwhile can ask for more.
type retransmitPlan interface {
	wait(sent int) (d time.Duration, last bool)
}

// wait doubles the timeout after each send (RFC 5389 §7.2.1), and waits
// last×rto after the final one.
func (s schedule) wait(sent int) (time.Duration, bool) {
	if sent >= s.sends {
		return time.Duration(s.last) * s.rto, true
	}
	return s.rto << (sent - 1), false
}

// spaced is the retransmission plan of a test once the round-trip time is
// known: sends every interval (no doubling: the tries are samples of the
// loss, and spacing them keeps them independent of a short burst), until
// an answer, or until tries() sends went unanswered, then a last wait of
// tail for a late answer.
type spaced struct {
	interval time.Duration
	tail     time.Duration
	// tries is asked again after each unanswered send, so that the loss
	// measured meanwhile by other tests counts.
	tries func() int
}

func (sp spaced) wait(sent int) (time.Duration, bool) {
	if sent >= sp.tries() {
		return sp.tail, true
	}
	return sp.interval, false
}

// exchange sends req from sendOn to dst on plan until an acceptable answer
// arrives on recvOn, the plan ends, or ctx is done. Answered exchanges count
// in the loss measurement.
func (e *engine) exchange(ctx context.Context, sendOn, recvOn *socket, dst netip.AddrPort, req request, accept func(netip.AddrPort, message) bool, wantRequest bool, plan retransmitPlan) outcome {
	t := &tx{id: req.txid, recvOn: recvOn, accept: accept, wantRequest: wantRequest, ch: make(chan arrival, 1)}
	e.mu.Lock()
	e.pending[t.id] = t
	e.mu.Unlock()
	raw := req.encode()
	to := net.UDPAddrFromAddrPort(dst)
	var out outcome
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sends := 0
loop:
	for {
		sends++
		if _, err := sendOn.pc.WriteTo(raw, to); err == nil {
			out.sent++
		}
		wait, last := plan.wait(sends)
		timer.Reset(wait)
		select {
		case a := <-t.ch:
			out.answered = true
			out.arrival = a
			out.rtt = a.at.Sub(start)
			break loop
		case <-timer.C:
			if last {
				if _, still := plan.wait(sends); still {
					break loop
				}
			}
		case <-ctx.Done():
			out.cut = true
			break loop
		}
	}
	t.mu.Lock()
	out.strays = slices.Clone(t.strays)
	t.mu.Unlock()
	e.mu.Lock()
	delete(e.pending, t.id)
	if out.answered && !wantRequest {
		e.noteLossLocked(t, out.sent)
	}
	e.mu.Unlock()
	return out
}

// from returns an accept function for exactly the given sources.
func from(srcs ...netip.AddrPort) func(netip.AddrPort, message) bool {
	return func(a netip.AddrPort, _ message) bool { return slices.Contains(srcs, netcore.Canonical(a)) }
}

func anySource(netip.AddrPort, message) bool { return true }
