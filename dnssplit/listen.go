package dnssplit

import (
	"errors"
	"net"
	"runtime"
	"sync"

	"github.com/libp2p/go-reuseport"
)

// ListenAndServe serves UDP and TCP on addr until Shutdown or Close. For UDP
// it opens one socket per CPU bound to the same address with SO_REUSEPORT,
// so the kernel spreads queries over them and sending (serialized per
// socket) runs in parallel. It returns ErrServerClosed after Shutdown.
func (s *Server) ListenAndServe(addr string) error {
	n := runtime.GOMAXPROCS(0)
	var pcs []net.PacketConn
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	for range n {
		pc, err := reuseport.ListenPacket("udp", addr)
		if err != nil {
			closeAll()
			return err
		}
		pcs = append(pcs, pc)
		addr = pc.LocalAddr().String() // ":0" picks one port for all
	}
	l, err := reuseport.Listen("tcp", addr)
	if err != nil {
		closeAll()
		return err
	}
	errc := make(chan error, n+1)
	var wg sync.WaitGroup
	for _, pc := range pcs {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- s.ServePacket(pc) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); errc <- s.Serve(l) }()
	err = <-errc
	if !errors.Is(err, ErrServerClosed) {
		// One socket failed: stop the others of this call.
		for _, pc := range pcs {
			pc.Close()
		}
		l.Close()
	}
	wg.Wait()
	return err
}
