package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// misdirectedDrain bounds how long the backend may take to finish the
// responses before a misdirected request once we half-closed it.
const misdirectedDrain = 30 * time.Second

// defaultIdleTimeout and halfCloseTimeout are documented on
// Proxy.IdleTimeout and Proxy.HalfCloseTimeout.
const (
	defaultIdleTimeout = time.Hour
	halfCloseTimeout   = time.Minute
)

func (p *Proxy) idleTimeout() time.Duration {
	if p == nil || p.IdleTimeout == 0 {
		return defaultIdleTimeout
	}
	return p.IdleTimeout
}

func (p *Proxy) halfCloseTimeout() time.Duration {
	if p == nil || p.HalfCloseTimeout == 0 {
		return halfCloseTimeout
	}
	return p.HalfCloseTimeout
}

// pipe copies c (after its peeked bytes, which connect already sent unless
// HTTP) to bc and bc to c until both directions end. A clean end of one
// direction is passed on as a half-close, and the other direction then
// has the proxy's HalfCloseTimeout to end too; an error closes both. A
// connection that carries no data for the proxy's IdleTimeout is closed.
// Between *net.TCPConn the copies use splice on Linux: no deadline is set
// per read, a timer checks the kernel's idea of the last data instead.
// Cancelling ctx closes both.
func pipe(ctx context.Context, c *Conn, bc net.Conn) {
	client := c.Conn
	closeBoth := sync.OnceFunc(func() {
		client.Close()
		bc.Close()
	})
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()

	// Copy sources: the connections themselves where the kernel can tell
	// when data last came (splice stays possible), else wrappers that note it.
	var csrc, bsrc io.Reader = client, bc
	act := newActivity(client, bc)
	copyFn := io.Copy
	if act.kernel == nil {
		// No splice between these: a pooled buffer, not one per copy.
		csrc, bsrc, copyFn = act.reader(client), act.reader(bc), copyPooled
	}
	if idle := c.proxy.idleTimeout(); idle > 0 {
		t := act.watch(idle, closeBoth)
		defer t.Stop()
	}
	var ended atomic.Int32
	var grace *time.Timer
	var graceMu sync.Mutex
	oneEnded := func() {
		if ended.Add(1) != 1 {
			return
		}
		if d := c.proxy.halfCloseTimeout(); d > 0 {
			graceMu.Lock()
			grace = time.AfterFunc(d, closeBoth)
			graceMu.Unlock()
		}
	}
	defer func() {
		graceMu.Lock()
		if grace != nil {
			grace.Stop()
		}
		graceMu.Unlock()
	}()

	var misdirected atomic.Bool
	var tr *responseTracker
	if c.Hello.Protocol == ProtocolHTTP {
		tr = newResponseTracker()
	}
	c2b := make(chan struct{})
	go func() {
		defer close(c2b)
		var err error
		if tr != nil {
			err = forwardHTTP(bc, &prefixConn{buf: c.Peeked, c: client, r: csrc}, c.stillRouted, c.httpIdle(), tr)
			if errors.Is(err, errMisdirected) {
				misdirected.Store(true)
				bc.SetReadDeadline(time.Now().Add(misdirectedDrain))
				err = nil
			}
		} else {
			_, err = copyFn(bc, csrc)
		}
		if err != nil {
			closeBoth()
		} else {
			closeWrite(bc)
		}
		oneEnded()
	}()
	var err error
	if tr != nil {
		err = forwardResponses(client, bsrc, tr)
	} else {
		_, err = copyFn(client, bsrc)
	}
	if err != nil {
		closeBoth()
	} else if misdirected.Load() {
		io.WriteString(client, misdirectedResponse)
		client.Close()
	} else {
		closeWrite(client)
	}
	oneEnded()
	<-c2b
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// activity tells when a routed connection last carried data: from the
// kernel (kernel non-nil) or from the copies' reads.
type activity struct {
	kernel func() (time.Duration, bool) // time since data last arrived on either socket
	last   atomic.Int64                 // unix nanos of the last read with data, without kernel
}

func newActivity(a, b net.Conn) *activity {
	act := &activity{kernel: kernelIdle(a, b)}
	act.last.Store(time.Now().UnixNano())
	return act
}

// idleFor returns how long the connection has carried no data.
func (a *activity) idleFor() time.Duration {
	if a.kernel != nil {
		if d, ok := a.kernel(); ok {
			return d
		}
		return 0 // sockets gone: the copies end on their own
	}
	return time.Since(time.Unix(0, a.last.Load()))
}

// watch calls expire once the connection has been idle for idle. The timer
// fires about once per idle period of an active connection: no cost per read.
func (a *activity) watch(idle time.Duration, expire func()) *time.Timer {
	var t *time.Timer
	var mu sync.Mutex
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(idle, func() {
		if d := a.idleFor(); d >= idle {
			expire()
		} else {
			mu.Lock()
			t.Reset(idle - d)
			mu.Unlock()
		}
	})
	return t
}

// reader wraps r to note the time of each read that returned data.
func (a *activity) reader(r io.Reader) io.Reader { return &activityReader{r: r, a: a} }

type activityReader struct {
	r io.Reader
	a *activity
}

func (r *activityReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.a.last.Store(time.Now().UnixNano())
	}
	return n, err
}
