package relay

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// listenRelayTCP opens the listener of an RFC 6062 TCP allocation on laddr.
// The port must be free: the socket binds without SO_REUSEPORT, so the bind
// fails if any socket (another allocation's, another process's) listens
// there, and only then sets SO_REUSEPORT, so that the allocation's own
// Connect requests can dial out from its relayed address as RFC 6062 §5.2
// wants. Binding with SO_REUSEPORT from the start let a second allocation
// share the port, and the kernel then gave it part of the first one's peer
// connections.
func listenRelayTCP(network string, laddr netip.AddrPort) (net.Listener, error) {
	domain := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(laddr.Port()), Addr: laddr.Addr().As4()}
	if network == "tcp6" {
		domain = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(laddr.Port()), Addr: laddr.Addr().As16()}
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("relay: relay listener: %w", err)
	}
	fail := func(what string, err error) (net.Listener, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("relay: relay listener %s: %s: %w", laddr, what, err)
	}
	// SO_REUSEADDR only passes over TIME_WAIT leftovers, never a listener.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if domain == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("SO_REUSEPORT", err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return fail("listen", err)
	}
	f := os.NewFile(uintptr(fd), "relay-tcp")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("relay: relay listener %s: %w", laddr, err)
	}
	return l, nil
}

// listenUDPExclusive opens the first client-facing UDP socket of
// ListenAndServe: bound without SO_REUSEPORT, so that a port any other
// socket holds (another relay, coturn, a second copy of this one) is an
// error instead of a silent share of the clients, and only then made
// shareable for this server's other readers.
func listenUDPExclusive(addr string) (net.PacketConn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	sc, err := pc.(*net.UDPConn).SyscallConn()
	if err == nil {
		cerr := sc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		err = netcore.Join(cerr, err)
	}
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("SO_REUSEPORT on %s: %w", addr, err)
	}
	return pc, nil
}
