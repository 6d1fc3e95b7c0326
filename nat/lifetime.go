package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// clock is the time source of the lifetime search, injectable for tests.
type clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const (
	// defaultLifetimeMax bounds the search: RFC 4787 asks for at least two
	// minutes of UDP mapping lifetime, so longer lifetimes need no keepalive
	// advice beyond that.
	defaultLifetimeMax = 2 * time.Minute
	// firstLifetimePoint is the shortest idle time tested; the doubling
	// round then tests 2 s, 4 s, 8 s … up to the maximum.
	firstLifetimePoint = 2 * time.Second
	// maxPointsPerRound bounds the mappings held open at once in a round.
	maxPointsPerRound = 15
)

// LifetimeStep is one step of the UDP mapping lifetime search.
type LifetimeStep struct {
	// Idle is the idle time this step tests.
	Idle time.Duration
	// Checked is false when the search starts waiting Idle, true when the
	// mapping idle for Idle was checked; Alive is then the result.
	Checked bool
	Alive   bool
	// Max is the longest idle time the search tests (Client.LifetimeMax).
	Max time.Duration
}

// mappingTest arms one fresh mapping; the returned check later reports
// whether that mapping still exists.
type armFunc func(ctx context.Context) (check func(ctx context.Context) (bool, error), err error)

// searchLifetime finds how long an idle mapping survives, between alive
// (survived) and dead (gone; 0 if it survived max). Each round arms several
// mappings at once and checks them at increasing idle times, so a round costs
// the largest idle time it tests, not the sum: first a doubling round
// (2 s, 4 s, 8 s … max) that stops at the first dead mapping, then linear
// rounds between the bounds until they are res apart. With one point per
// round this is a binary search.
func searchLifetime(ctx context.Context, clk clock, maxIdle, res time.Duration, arm armFunc, progress func(LifetimeStep)) (alive, dead time.Duration, err error) {
	step := func(s LifetimeStep) {
		if progress != nil {
			s.Max = maxIdle
			progress(s)
		}
	}
	var points []time.Duration
	for p := firstLifetimePoint; p < maxIdle; p *= 2 {
		points = append(points, p)
	}
	points = append(points, maxIdle)
	for {
		a, d, err := lifetimeRound(ctx, clk, points, arm, step)
		if err != nil {
			return alive, dead, err
		}
		alive = max(alive, a)
		if d > 0 && (dead == 0 || d < dead) {
			dead = d
		}
		if dead == 0 {
			return alive, 0, nil // survived the maximum
		}
		if res <= 0 {
			res = max(time.Second, alive/8)
		}
		width := dead - alive
		if width <= res {
			return alive, dead, nil
		}
		n := min(int((width+res-1)/res)-1, maxPointsPerRound)
		n = max(n, 1)
		step := width / time.Duration(n+1)
		points = points[:0]
		for i := 1; i <= n; i++ {
			points = append(points, alive+time.Duration(i)*step)
		}
	}
}

// lifetimeRound arms one mapping per point, then checks each at its point in
// increasing order, stopping at the first dead one (later ones are dead too).
func lifetimeRound(ctx context.Context, clk clock, points []time.Duration, arm armFunc, step func(LifetimeStep)) (alive, dead time.Duration, err error) {
	checks := make([]func(context.Context) (bool, error), len(points))
	for i := range points {
		if checks[i], err = arm(ctx); err != nil {
			return 0, 0, err
		}
	}
	start := clk.Now()
	for i, p := range points {
		step(LifetimeStep{Idle: p})
		if err := clk.Sleep(ctx, p-clk.Now().Sub(start)); err != nil {
			return alive, 0, err
		}
		ok, err := checks[i](ctx)
		if err != nil {
			return alive, 0, err
		}
		step(LifetimeStep{Idle: p, Checked: true, Alive: ok})
		if !ok {
			return alive, p, nil
		}
		alive = p
	}
	return alive, 0, nil
}

// probeLifetime measures the UDP mapping lifetime against the RFC 5780
// server using RESPONSE-PORT: a mapping is armed by a Binding from socket X;
// later a second socket asks the server to answer to X's mapped port, and the
// answer reaches X only while the mapping lives.
func (c *Client) probeLifetime(ctx context.Context, e *engine, p plan, first []obs, rep *Report, rec *recorder) {
	note := func(msg string) {
		rec.add(LifetimeTest, 0, Evidence{Test: LifetimeTest, Note: msg})
	}
	if p.rfc < 0 || rep.Server.RFC5780 != Supported {
		note("needs an RFC 5780 server (RESPONSE-PORT)")
		return
	}
	srv := p.primary
	interval := min(max(3*first[p.rfc].rtt, minRTO), c.rto())
	sch := spaced{interval: interval, tail: 3 * interval, tries: e.triesNeeded}
	clk := c.clock
	if clk == nil {
		clk = realClock{}
	}
	maxIdle := c.LifetimeMax
	if maxIdle <= 0 {
		maxIdle = defaultLifetimeMax
	}
	ctx, cancel := context.WithTimeout(ctx, 3*maxIdle+c.timeout())
	defer cancel()

	var checker *socket
	var checkerPublic netip.Addr
	arm := func(ctx context.Context) (func(context.Context) (bool, error), error) {
		x, err := e.open(ctx)
		if err != nil {
			return nil, err
		}
		b := c.bind(ctx, e, x, srv, request{txid: newTxID()}, sch, rec, LifetimeTest, 1)
		if !b.answered {
			return nil, errors.New("nat: lifetime: the server did not answer a new mapping")
		}
		return func(ctx context.Context) (bool, error) {
			if checker == nil {
				y, err := e.open(ctx)
				if err != nil {
					return false, err
				}
				yb := c.bind(ctx, e, y, srv, request{txid: newTxID()}, sch, rec, LifetimeTest, 2)
				if !yb.answered {
					return false, errors.New("nat: lifetime: the server did not answer the checking socket")
				}
				checker, checkerPublic = y, yb.mapped.Addr()
			}
			if checkerPublic != b.mapped.Addr() {
				return false, fmt.Errorf("nat: lifetime: two sockets got different public IPs (%v, %v)", checkerPublic, b.mapped.Addr())
			}
			req := request{txid: newTxID(), responsePort: b.mapped.Port()}
			out := e.exchange(ctx, checker, x, srv, req, from(srv), false, sch)
			if out.answered && !out.arrival.msg.success {
				return false, fmt.Errorf("nat: lifetime: RESPONSE-PORT refused with error %d", out.arrival.msg.errorCode)
			}
			// The mapping is done with: close X so sockets do not pile up.
			x.pc.Close()
			return out.answered, nil
		}, nil
	}
	// Self-check: a fresh mapping must be reachable through RESPONSE-PORT.
	check, err := arm(ctx)
	if err == nil {
		var ok bool
		ok, err = check(ctx)
		if err == nil && !ok {
			err = errors.New("nat: lifetime: RESPONSE-PORT answers do not reach a fresh mapping")
		}
	}
	if err != nil {
		note(err.Error())
		return
	}
	alive, dead, err := searchLifetime(ctx, clk, maxIdle, c.LifetimeResolution, arm, c.LifetimeProgress)
	if err != nil {
		note(err.Error())
		return
	}
	rep.MappingLifetime, rep.MappingExpired = alive, dead
	rep.MappingLifetimeAtLeast = dead == 0
	rep.SuggestedKeepalive = max(alive/2, time.Second)
	note(fmt.Sprintf("mapping alive after %v idle, gone after %v", alive, dead))
}
