package dnssplit

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ListenAndServe serves UDP and TCP on addr until Shutdown or Close, and
// returns ErrServerClosed after Shutdown. It binds one UDP socket and one TCP
// listener without SO_REUSEPORT, so an address another process (another
// server, an unbound) already holds is an error instead of a silent split of
// the queries. With port 0, UDP and TCP get the same free port. If either
// socket fails, the other is closed and the error returned.
//
// To spread UDP over several sockets (one per CPU), bind them yourself with
// SO_REUSEPORT and call ServePacket for each, and Serve for the listener.
func (s *Server) ListenAndServe(addr string) error {
	pc, l, err := listenBoth(addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- s.ServePacket(pc) }()
	go func() { defer wg.Done(); errc <- s.Serve(l) }()
	err = <-errc
	if !errors.Is(err, ErrServerClosed) {
		// One socket failed: stop the other of this call.
		pc.Close()
		l.Close()
	}
	wg.Wait()
	return err
}

// listenBoth binds UDP and TCP on the same address and port.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	pc, l, err := netcore.ListenBoth(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dnssplit: %w", err)
	}
	return pc, l, nil
}
