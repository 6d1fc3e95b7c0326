package dnssplit

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// dotIdleTimeout is how long a DNS-over-TLS connection with nothing in
// flight stays open: RFC 7858 section 3.4 asks clients to reuse connections,
// and servers close idle ones after some seconds (unbound after 30 s), so 10 s
// as CoreDNS keeps them, long enough for a burst of cache misses to share one
// handshake.
const dotIdleTimeout = 10 * time.Second

// errConnLost marks a query whose connection closed before its answer came.
var errConnLost = errors.New("dnssplit: upstream connection lost")

// dotPool keeps one persistent, pipelined DNS-over-TLS connection to one
// upstream (RFC 7858 section 3.4, RFC 7766 section 6.2.1.1): queries are
// written as they come, each with an ID unique on the connection, and one
// reader hands the answers, in whatever order they arrive, to their
// queries. A lost connection is replaced on the next query; a query that
// found its reused connection closed by the server is sent once more on a
// fresh one. Safe for concurrent use.
type dotPool struct {
	u    *upstreamState
	dial DialFunc
	idle time.Duration

	mu      sync.Mutex
	conn    *dotConn
	dialing chan struct{} // non-nil while a dial is under way; closed when done
	closed  bool
	wg      sync.WaitGroup // readers
}

type dotResult struct {
	msg *dns.Msg
	err error
}

type dotConn struct {
	pool *dotPool
	c    net.Conn
	wmu  sync.Mutex // one writer at a time

	mu      sync.Mutex
	pending map[uint16]chan dotResult
	dead    bool
	idle    *time.Timer
}

func newDoTPool(u *upstreamState, dial DialFunc) *dotPool {
	return &dotPool{u: u, dial: dial, idle: dotIdleTimeout}
}

// exchange sends m and waits for its answer until ctx ends. m.Id may be
// changed to one unique on the connection.
func (p *dotPool) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	for attempt := 0; ; attempt++ {
		c, fresh, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		r, err := c.exchange(ctx, m)
		if err == nil || fresh || attempt > 0 || !errors.Is(err, errConnLost) || ctx.Err() != nil {
			return r, err
		}
		// The server closed a reused connection (idle timeout): once more.
	}
}

// get returns the live connection, dialing one if there is none; fresh
// reports that it was dialed for this call.
func (p *dotPool) get(ctx context.Context) (c *dotConn, fresh bool, err error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, net.ErrClosed
		}
		if p.conn != nil {
			c := p.conn
			p.mu.Unlock()
			return c, false, nil
		}
		if wait := p.dialing; wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
				continue // the dial ended; its connection (or none) is in p.conn
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		done := make(chan struct{})
		p.dialing = done
		p.mu.Unlock()
		c, err := p.connect(ctx)
		p.mu.Lock()
		p.dialing = nil
		close(done)
		if err == nil && p.closed {
			err = net.ErrClosed
			c.idle.Stop()
			c.c.Close()
		}
		if err != nil {
			p.mu.Unlock()
			return nil, false, err
		}
		p.conn = c
		p.wg.Add(1)
		p.mu.Unlock()
		go c.read()
		return c, true, nil
	}
}

// connect dials the upstream and completes the TLS handshake under ctx.
func (p *dotPool) connect(ctx context.Context) (*dotConn, error) {
	conn, err := p.dial(ctx, "tcp", p.u.Addr.String())
	if err != nil {
		return nil, err
	}
	tc := tls.Client(conn, p.u.tlsConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	c := &dotConn{pool: p, c: tc, pending: make(map[uint16]chan dotResult)}
	c.idle = time.AfterFunc(p.idle, c.idleClose)
	return c, nil
}

// close closes the connection and waits for its reader.
func (p *dotPool) close() {
	p.mu.Lock()
	p.closed = true
	c := p.conn
	p.mu.Unlock()
	if c != nil {
		c.fail(net.ErrClosed)
	}
	p.wg.Wait()
}

func (c *dotConn) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	ch := make(chan dotResult, 1)
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return nil, errConnLost
	}
	for c.pending[m.Id] != nil {
		m.Id = dns.Id()
	}
	id := m.Id
	c.pending[id] = ch
	c.idle.Stop()
	c.mu.Unlock()
	defer c.done(id)

	out, err := m.Pack()
	if err != nil {
		return nil, err
	}
	if len(out) > dns.MaxMsgSize {
		return nil, fmt.Errorf("dnssplit: query of %d bytes", len(out))
	}
	buf := make([]byte, 2+len(out))
	binary.BigEndian.PutUint16(buf, uint16(len(out)))
	copy(buf[2:], out)
	c.wmu.Lock()
	if d, ok := ctx.Deadline(); ok {
		c.c.SetWriteDeadline(d)
	}
	_, err = c.c.Write(buf)
	c.wmu.Unlock()
	if err != nil {
		c.fail(err)
		return nil, fmt.Errorf("%w: %v", errConnLost, err)
	}
	select {
	case res := <-ch:
		return res.msg, res.err
	case <-ctx.Done():
		// An upstream that stops answering on a connection that stays
		// open would stall every later query: drop the connection, the
		// next query gets a new one.
		c.fail(ctx.Err())
		return nil, ctx.Err()
	}
}

// done forgets a query's slot and arms the idle timer when none is left.
func (c *dotConn) done(id uint16) {
	c.mu.Lock()
	delete(c.pending, id)
	if len(c.pending) == 0 && !c.dead {
		c.idle.Reset(c.pool.idle)
	}
	c.mu.Unlock()
}

// idleClose closes the connection if it is still idle when the timer fires.
func (c *dotConn) idleClose() {
	c.mu.Lock()
	idle := len(c.pending) == 0
	c.mu.Unlock()
	if idle {
		c.fail(errors.New("idle"))
	}
}

// fail marks the connection dead, closes it, takes it out of the pool and
// tells every query waiting on it.
func (c *dotConn) fail(err error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.idle.Stop()
	pending := c.pending
	c.pending = map[uint16]chan dotResult{}
	c.mu.Unlock()
	c.c.Close()
	p := c.pool
	p.mu.Lock()
	if p.conn == c {
		p.conn = nil
	}
	p.mu.Unlock()
	for _, ch := range pending {
		ch <- dotResult{err: fmt.Errorf("%w: %v", errConnLost, err)}
	}
}

// read hands each answer to the query with its ID until the connection ends.
// Answers nobody waits for (a query that gave up) are dropped.
func (c *dotConn) read() {
	defer c.pool.wg.Done()
	var lenBuf [2]byte
	for {
		if _, err := io.ReadFull(c.c, lenBuf[:]); err != nil {
			c.fail(err)
			return
		}
		n := binary.BigEndian.Uint16(lenBuf[:])
		b := make([]byte, n)
		if _, err := io.ReadFull(c.c, b); err != nil {
			c.fail(err)
			return
		}
		if n < 2 {
			continue
		}
		id := binary.BigEndian.Uint16(b)
		res := dotResult{msg: new(dns.Msg)}
		if err := res.msg.Unpack(b); err != nil {
			res = dotResult{err: fmt.Errorf("%w: %v", errBadAnswer, err)}
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- res
		}
	}
}
