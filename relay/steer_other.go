//go:build !linux

package relay

import "net"

// steerBySource is Linux only (SO_ATTACH_REUSEPORT_CBPF); elsewhere the
// kernel's default hash spreads clients over the sockets.
func steerBySource(net.PacketConn, int) error { return nil }
