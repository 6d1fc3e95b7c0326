//go:build !linux

package nat

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// traceHop needs the Linux socket error queue; elsewhere the path test finds nothing.
func traceHop(context.Context, net.PacketConn, netip.AddrPort, int, time.Duration) netip.Addr {
	return netip.Addr{}
}
