package netcore

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// listenPortTries bounds how often ListenBoth with port 0 picks a new UDP
// port because the TCP port of the same number is taken: each try fails only
// if another process holds that one TCP port, so a few are plenty.
const listenPortTries = 8

// ListenBoth binds a UDP socket and a TCP listener on the same address and
// port (DNS and TURN serve both on one port). With port 0 the UDP socket
// gets a free port and TCP the same number; if that TCP port is taken (a
// free UDP port says nothing about TCP) another UDP port is tried, up to 8
// times. Errors are the net package's, which name the protocol and the
// address; nothing stays bound on error.
func ListenBoth(addr string) (net.PacketConn, net.Listener, error) {
	anyPort, err := portZero(addr)
	if err != nil {
		return nil, nil, err
	}
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err // a *net.OpError: "listen udp ADDR: …"
		}
		taddr := pc.LocalAddr().String() // ":0" becomes the UDP port
		l, err := net.Listen("tcp", taddr)
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if !anyPort || !errors.Is(err, syscall.EADDRINUSE) || try+1 >= listenPortTries {
			return nil, nil, err
		}
	}
}

// portZero reports whether addr asks for any free port.
func portZero(addr string) (bool, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if port == "" {
		return true, nil
	}
	ap, err := netip.ParseAddrPort("0.0.0.0:" + port)
	return err == nil && ap.Port() == 0, nil
}
