package nat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Linux socket error queue constants (linux/errqueue.h).
const (
	soEEOriginICMP   = 2  // SO_EE_ORIGIN_ICMP
	icmpTimeExceeded = 11 // ICMP type
)

// traceHop sends one Binding request with the given TTL from pc and returns
// the router that answered with ICMP Time Exceeded, read from the socket's
// error queue (IP_RECVERR). It returns an invalid address when nothing came
// within wait or before ctx was done, or the socket does not allow it.
func traceHop(ctx context.Context, pc net.PacketConn, dst netip.AddrPort, ttl int, wait time.Duration) netip.Addr {
	sc, ok := pc.(syscall.Conn)
	if !ok || !dst.Addr().Is4() {
		return netip.Addr{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.Addr{}
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = errors.Join(
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1),
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, ttl))
	}); err != nil || serr != nil {
		return netip.Addr{}
	}
	if _, err := pc.WriteTo(request{txid: newTxID()}.encode(), net.UDPAddrFromAddrPort(dst)); err != nil {
		return netip.Addr{}
	}
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = pc.SetReadDeadline(deadline)
	// A cancelled ctx (not only its deadline) ends the wait.
	stop := context.AfterFunc(ctx, func() { _ = pc.SetReadDeadline(time.Now()) })
	defer stop()
	var hop netip.Addr
	buf := make([]byte, 1500)
	oob := make([]byte, 512)
	_ = rc.Read(func(fd uintptr) bool {
		_, oobn, _, _, err := syscall.Recvmsg(int(fd), buf, oob, syscall.MSG_ERRQUEUE)
		if errors.Is(err, syscall.EAGAIN) {
			// Nothing queued: drain a plain datagram (an answer, had the
			// TTL sufficed) so readiness does not spin, then keep waiting.
			_, _, _ = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return false
		}
		if err != nil {
			return true
		}
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return true
		}
		for _, m := range msgs {
			if m.Header.Level != syscall.IPPROTO_IP || m.Header.Type != syscall.IP_RECVERR || len(m.Data) < 16+8 {
				continue
			}
			// struct sock_extended_err: errno u32, origin u8, type u8, code
			// u8, pad u8, info u32, data u32; then the offender sockaddr_in.
			if m.Data[4] != soEEOriginICMP || m.Data[5] != icmpTimeExceeded {
				continue
			}
			off := m.Data[16:]
			if off[0]|off[1] == 0 {
				continue // no offender address
			}
			hop = netip.AddrFrom4([4]byte(off[4:8]))
		}
		return hop.IsValid()
	})
	return hop
}
