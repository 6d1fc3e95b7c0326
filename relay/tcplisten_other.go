//go:build !linux

package relay

import (
	"net"
	"net/netip"
)

// listenRelayTCP opens the listener of an RFC 6062 TCP allocation on laddr,
// without SO_REUSEPORT so that no other socket can share the port. Connect
// then dials from another port: elsewhere than on Linux, a port cannot be
// made shareable after an exclusive bind.
func listenRelayTCP(network string, laddr netip.AddrPort) (net.Listener, error) {
	return net.Listen(network, laddr.String())
}

// listenUDPExclusive opens the first client-facing UDP socket, without
// SO_REUSEPORT, so that a port another socket holds is an error; elsewhere
// than on Linux ListenAndServe serves one UDP reader.
func listenUDPExclusive(addr string) (net.PacketConn, error) {
	return net.ListenPacket("udp", addr)
}
