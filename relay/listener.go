package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

var errBadFrame = errors.New("relay: stream carries neither STUN nor ChannelData")

// listener sits between a client-facing TCP or TLS listener and the engine:
// it caps connections per source, puts a deadline on the handshake and the
// first authenticated request, and runs every framed message through inspect.
type listener struct {
	s         *Server
	l         net.Listener
	transport string

	mu      sync.Mutex
	perSrc  map[netip.Addr]int
	conns   map[*streamConn]struct{}
	drained *sync.Cond

	accepted  chan *streamConn // from run to Accept
	done      chan struct{}    // closed when run ended: the engine's loop ends
	err       error            // why run ended, set before done closes
	closeOnce sync.Once
	closing   chan struct{} // closed by Close: the engine's connections end
	stopOnce  sync.Once
	stopped   chan struct{} // closed by stopAccepting and Close: ends the accept loop
}

func newListener(s *Server, l net.Listener, transport string) *listener {
	w := &listener{s: s, l: l, transport: transport, perSrc: map[netip.Addr]int{},
		conns: map[*streamConn]struct{}{}, accepted: make(chan *streamConn),
		done: make(chan struct{}), closing: make(chan struct{}), stopped: make(chan struct{})}
	w.drained = sync.NewCond(&w.mu)
	return w
}

// run accepts connections from the client-facing listener with the shared
// accept loop (temporary errors such as EMFILE back off and go on) and hands
// them to Accept, until stopAccepting, Close or a permanent error. After
// stopAccepting it waits for Close: the engine ends the connections it
// serves once Accept fails. serveListener starts it and waits for it
// through done.
func (w *listener) run() {
	err := netcore.AcceptLoop(w.l, w.stopped, w.admit)
	if err == nil {
		<-w.closing
		err = net.ErrClosed
	}
	w.err = err
	close(w.done)
}

// admit applies the per-source cap to c and passes it to Accept. It waits
// until the engine takes it (the engine accepts as fast as it can) or Close.
func (w *listener) admit(c net.Conn) {
	src := netcore.AddrPort(c.RemoteAddr())
	limit := w.s.Limits.connsPerSource()
	w.mu.Lock()
	if limit > 0 && w.perSrc[src.Addr()] >= limit {
		w.mu.Unlock()
		w.s.counters.connsRejected.Add(1)
		c.Close()
		return
	}
	w.perSrc[src.Addr()]++
	sc := &streamConn{Conn: c, w: w, store: make([]byte, 4096)}
	sc.buf = sc.store[:0]
	sc.src = frameSource{client: src, server: netcore.AddrPort(c.LocalAddr()), transport: w.transport, reply: sc.reply}
	w.conns[sc] = struct{}{}
	w.mu.Unlock()
	// The TLS handshake and the first authenticated request must
	// arrive in time.
	if d := w.s.Limits.handshake(); d > 0 { // 0: the limit was removed
		_ = c.SetDeadline(time.Now().Add(d))
	}
	select {
	case w.accepted <- sc:
	case <-w.closing:
		sc.Close()
	}
}

// Accept returns the next client connection within the per-source cap.
func (w *listener) Accept() (net.Conn, error) {
	select {
	case sc := <-w.accepted:
		return sc, nil
	case <-w.done:
		return nil, w.err
	}
}

func (w *listener) forget(sc *streamConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.conns[sc]; !ok {
		return
	}
	delete(w.conns, sc)
	a := sc.src.client.Addr()
	if w.perSrc[a]--; w.perSrc[a] <= 0 {
		delete(w.perSrc, a)
	}
	if len(w.conns) == 0 {
		w.drained.Broadcast()
	}
}

func (w *listener) closeConns() {
	w.mu.Lock()
	conns := make([]*streamConn, 0, len(w.conns))
	for c := range w.conns {
		conns = append(conns, c)
	}
	w.mu.Unlock()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
}

// wait blocks until the engine closed every connection it was given, or a
// bounded time passed.
func (w *listener) wait() {
	deadline := time.AfterFunc(2*time.Second, func() {
		w.mu.Lock()
		w.drained.Broadcast()
		w.mu.Unlock()
	})
	defer deadline.Stop()
	start := time.Now()
	w.mu.Lock()
	for len(w.conns) > 0 && time.Since(start) < 2*time.Second {
		w.drained.Wait()
	}
	w.mu.Unlock()
}

// stopAccepting closes the listening socket and ends the accept loop, but
// keeps the connections accepted so far (Shutdown).
func (w *listener) stopAccepting() {
	w.stopOnce.Do(func() { close(w.stopped) })
	_ = w.l.Close()
}

func (w *listener) Close() error {
	w.closeOnce.Do(func() { close(w.closing) })
	w.stopOnce.Do(func() { close(w.stopped) })
	return w.l.Close()
}

func (w *listener) Addr() net.Addr { return w.l.Addr() }

// streamConn frames a client's byte stream into STUN and ChannelData
// messages (RFC 8656 §11.5: ChannelData padded to 4 bytes on streams) and
// hands the engine one accepted message per Read.
type streamConn struct {
	net.Conn
	w   *listener
	src frameSource

	store   []byte // read buffer; buf is its unread part
	buf     []byte // unread bytes; owned by the reading goroutine
	started bool   // authenticated request seen: deadline lifted
	// raw is set once the engine answered an authenticated ConnectionBind
	// with success: the stream carries peer data from then on. bindTID is
	// that request's transaction ID while its answer is awaited.
	raw     atomic.Bool
	bindTID atomic.Pointer[[stun.TransactionIDSize]byte]

	closeOnce sync.Once
}

// maxFrame is the largest STUN message or ChannelData on a stream.
const maxFrame = 0xFFFF + 20

func frameLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	switch {
	case isChannelData(b):
		n := int(binary.BigEndian.Uint16(b[2:4]))
		return 4 + (n+3)&^3, nil
	case b[0]&0xC0 == 0:
		if len(b) >= 8 && binary.BigEndian.Uint32(b[4:8]) != magicCookie {
			return 0, errBadFrame
		}
		return 20 + int(binary.BigEndian.Uint16(b[2:4])), nil
	}
	return 0, errBadFrame
}

func (c *streamConn) Read(p []byte) (int, error) {
	if c.raw.Load() {
		if len(c.buf) > 0 {
			n := copy(p, c.buf)
			c.buf = c.buf[n:]
			return n, nil
		}
		return c.Conn.Read(p)
	}
	for {
		need, err := frameLen(c.buf)
		if err != nil {
			c.w.s.counters.malformed.Add(1)
			return 0, err
		}
		if need == 0 || len(c.buf) < need {
			if need > maxFrame {
				return 0, errBadFrame
			}
			if err := c.fill(); err != nil {
				return 0, err
			}
			continue
		}
		frame := c.buf[:need]
		if isChannelData(frame) {
			c.w.s.relayChannelData(frame, allocKey{client: c.src.client, server: c.src.server})
			c.buf = c.buf[need:]
			continue
		}
		pass := len(frame) <= len(p) && c.w.s.inspect(frame, &c.src)
		if !c.started && c.src.authed {
			// Only credentials earn a connection without a deadline: a
			// Binding, a challenge or garbage must not hold it open.
			c.started = true
			_ = c.Conn.SetDeadline(time.Time{})
		}
		n := 0
		if pass {
			n = copy(p, frame)
			if c.src.verified && binary.BigEndian.Uint16(frame[0:2]) == connectionBindRequest {
				// Raw only after the engine accepts it: it checks that
				// the connection ID is live and the same user's.
				var tid [stun.TransactionIDSize]byte
				copy(tid[:], frame[8:20])
				c.bindTID.Store(&tid)
			}
		}
		c.buf = c.buf[need:]
		if pass {
			return n, nil
		}
	}
}

// fill reads more bytes into buf, compacting it first.
func (c *streamConn) fill() error {
	n := copy(c.store, c.buf)
	if len(c.store)-n < 1500 {
		nb := make([]byte, 2*len(c.store))
		copy(nb, c.store[:n])
		c.store = nb
	}
	c.buf = c.store[:n]
	m, err := c.Conn.Read(c.store[n:])
	c.buf = c.store[:n+m]
	n = m
	if err != nil && n == 0 {
		var ne net.Error
		if !c.started && errors.As(err, &ne) && ne.Timeout() {
			c.w.s.counters.connsRejected.Add(1)
		}
		return err
	}
	return nil
}

// Message types of ConnectionBind (method 0x00B, RFC 6062 §6.2) as the
// first two bytes of a frame: request and success response.
const (
	connectionBindRequest = 0x000B
	connectionBindSuccess = 0x010B
)

// Write sends the engine's frames to the client. The success answer to an
// authenticated ConnectionBind turns the stream into raw peer data; the
// engine reads it only after that write.
func (c *streamConn) Write(b []byte) (int, error) {
	if tid := c.bindTID.Load(); tid != nil && len(b) >= 20 &&
		binary.BigEndian.Uint16(b[0:2]) == connectionBindSuccess && [stun.TransactionIDSize]byte(b[8:20]) == *tid {
		c.raw.Store(true)
		c.bindTID.Store(nil)
	}
	return c.Conn.Write(b)
}

func (c *streamConn) reply(b []byte) {
	if b != nil {
		_, _ = c.Conn.Write(b)
	}
}

func (c *streamConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		c.w.forget(c)
	})
	return err
}
