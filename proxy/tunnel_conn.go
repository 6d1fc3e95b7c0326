package proxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tunnelConn is a stream from an edge as the agent's side sees it: the
// client's address as RemoteAddr, the address it connected to at the edge
// as LocalAddr, so that whatever serves it (a [Proxy], a [Pool] sending a
// PROXY header) sees the real client.
//
// Its answer to the edge, streamOK, may be held back (holdOK) and sent as
// the first byte of the first Write, so that it travels in the same packet
// as the backend's first bytes (a ServerHello) instead of one of its own;
// it is sent alone at the latest after okHoldMax, or at CloseWrite or
// Close.
type tunnelConn struct {
	net.Conn
	remote, local *net.TCPAddr
	once          sync.Once
	release       func()

	held    atomic.Bool // streamOK not sent yet; cleared once it is written
	okMu    sync.Mutex  // the write of a held streamOK
	okTimer *time.Timer
}

// okHoldMax bounds how long the agent holds a stream's OK for the backend's
// first bytes: a backend on the home network answers a ClientHello in
// milliseconds (a dial and one handshake step), and the edge, which waits
// for the OK up to its OpenTimeout (5 s by default) before it tries another
// agent, still hears soon that the stream was taken when the backend is
// slow or waits for more from the client than the edge sent.
const okHoldMax = 50 * time.Millisecond

// holdOK makes the first Write carry streamOK, or the timer send it alone.
func (c *tunnelConn) holdOK() {
	c.okMu.Lock() // the timer's flushOK reads okTimer
	defer c.okMu.Unlock()
	c.held.Store(true)
	c.okTimer = time.AfterFunc(okHoldMax, func() { c.flushOK() })
}

// sendOK writes streamOK now (not held).
func (c *tunnelConn) sendOK() error {
	_, err := c.Conn.Write([]byte{streamOK})
	return err
}

// flushOK sends a held streamOK alone.
func (c *tunnelConn) flushOK() error {
	if !c.held.Load() {
		return nil
	}
	c.okMu.Lock()
	defer c.okMu.Unlock()
	if !c.held.Load() {
		return nil
	}
	c.okTimer.Stop()
	err := c.sendOK()
	c.held.Store(false) // only now: a Write that sees it goes after the OK
	return err
}

func (c *tunnelConn) Write(b []byte) (int, error) {
	if !c.held.Load() {
		return c.Conn.Write(b)
	}
	c.okMu.Lock()
	if !c.held.Load() {
		c.okMu.Unlock()
		return c.Conn.Write(b)
	}
	c.okTimer.Stop()
	// streamOK and the first bytes in one write: one packet.
	buf := copyBufs.Get().(*[32 << 10]byte)
	buf[0] = streamOK
	k := copy(buf[1:], b)
	n, err := c.Conn.Write(buf[:1+k])
	copyBufs.Put(buf)
	c.held.Store(false)
	c.okMu.Unlock()
	n = max(n-1, 0)
	if err != nil || k == len(b) {
		return n, err
	}
	m, err := c.Conn.Write(b[k:])
	return n + m, err
}

func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }
func (c *tunnelConn) LocalAddr() net.Addr  { return c.local }

// CloseWrite ends our direction of the stream (a FIN); reads go on.
func (c *tunnelConn) CloseWrite() error {
	if err := c.flushOK(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// Close sends a held streamOK first: the edge then closes the client's
// connection as the target did, rather than reading a missing answer as a
// broken tunnel.
func (c *tunnelConn) Close() error {
	c.flushOK()
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return err
}

// ReadFrom lets io.Copy into c reach the stream's ReadFrom.
func (c *tunnelConn) ReadFrom(r io.Reader) (int64, error) {
	if c.held.Load() {
		return copyPooled(c, r) // the first Write carries the OK
	}
	return io.Copy(c.Conn, r)
}
