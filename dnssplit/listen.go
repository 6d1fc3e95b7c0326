package dnssplit

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// listenPortTries bounds how often ListenAndServe with port 0 picks a new UDP
// port because the TCP port of the same number is taken: each try fails only
// if another process holds that one TCP port, so a few are plenty.
const listenPortTries = 8

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
	anyPort, err := portZero(addr)
	if err != nil {
		return nil, nil, err
	}
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dnssplit: listen udp %s: %w", addr, err)
		}
		taddr := pc.LocalAddr().String() // ":0" becomes the UDP port
		l, err := net.Listen("tcp", taddr)
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if !anyPort || !errors.Is(err, syscall.EADDRINUSE) || try+1 >= listenPortTries {
			return nil, nil, fmt.Errorf("dnssplit: listen tcp %s: %w", taddr, err)
		}
	}
}

// portZero reports whether addr asks for any free port.
func portZero(addr string) (bool, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("dnssplit: listen address %q: %w", addr, err)
	}
	if port == "" {
		return true, nil
	}
	ap, err := netip.ParseAddrPort("0.0.0.0:" + port)
	return err == nil && ap.Port() == 0, nil
}
