package proxy

import (
	"io"
	"net"
	"sync"
)

// tunnelConn is a stream from an edge as the agent's side sees it: the
// client's address as RemoteAddr, the address it connected to at the edge
// as LocalAddr, so that whatever serves it (a [Proxy], a [Pool] sending a
// PROXY header) sees the real client.
type tunnelConn struct {
	net.Conn
	remote, local *net.TCPAddr
	once          sync.Once
	release       func()
}

func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }
func (c *tunnelConn) LocalAddr() net.Addr  { return c.local }

// CloseWrite ends our direction of the stream (a FIN); reads go on.
func (c *tunnelConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

func (c *tunnelConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return err
}

// ReadFrom lets io.Copy into c reach the stream's ReadFrom.
func (c *tunnelConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }
