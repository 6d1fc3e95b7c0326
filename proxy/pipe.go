package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// misdirectedDrain bounds how long the backend may take to finish the
// responses before a misdirected request once we half-closed it.
const misdirectedDrain = 30 * time.Second

// pipe copies c (after its peeked bytes, which connect already sent unless
// HTTP) to bc and bc to c until both directions end. A clean end of one
// direction is passed on as a half-close; an error closes both. Between
// *net.TCPConn the copies use splice on Linux. Cancelling ctx closes both.
func pipe(ctx context.Context, c *Conn, bc net.Conn) {
	client := c.Conn
	stop := context.AfterFunc(ctx, func() {
		client.Close()
		bc.Close()
	})
	defer stop()

	var misdirected atomic.Bool
	c2b := make(chan error, 1)
	go func() {
		var err error
		if c.Hello.Protocol == ProtocolHTTP {
			err = forwardHTTP(bc, &prefixConn{buf: c.Peeked, c: client}, c.stillRouted, c.httpIdle())
			if errors.Is(err, errMisdirected) {
				misdirected.Store(true)
				bc.SetReadDeadline(time.Now().Add(misdirectedDrain))
				err = nil
			}
		} else {
			_, err = io.Copy(bc, client)
		}
		if err != nil {
			client.Close()
			bc.Close()
		} else {
			closeWrite(bc)
		}
		c2b <- err
	}()
	_, err := io.Copy(client, bc)
	if err != nil {
		client.Close()
		bc.Close()
	} else if misdirected.Load() {
		io.WriteString(client, misdirectedResponse)
		client.Close()
	} else {
		closeWrite(client)
	}
	t := time.NewTimer(halfCloseTimeout)
	defer t.Stop()
	select {
	case <-c2b:
	case <-t.C:
		// The backend finished long ago; a client that never closes its
		// side must not hold the connection forever.
		client.Close()
		bc.Close()
		<-c2b
	}
}

// halfCloseTimeout bounds how long a client may keep sending after the
// backend closed its side (HAProxy's "timeout client-fin" plays this role).
const halfCloseTimeout = time.Minute

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
