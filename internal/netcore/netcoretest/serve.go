package netcoretest

import (
	"net"
	"sync"
	"testing"
)

// Serve accepts on l until it is closed and runs handle for each connection
// in a goroutine of its own, closing the connection when handle returns. At
// the end of tb it closes l and waits for every handler, so a test's
// backends end before its leak check.
func Serve(tb testing.TB, l net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	tb.Cleanup(func() { l.Close(); wg.Wait() })
}
