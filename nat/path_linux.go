package nat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/hairpin-go/hairpin/internal/netcore"
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
		serr = netcore.Join(
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1),
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl))
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
		_, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_ERRQUEUE)
		if errors.Is(err, unix.EAGAIN) {
			// Nothing queued: drain a plain datagram (an answer, had the
			// TTL sufficed) so readiness does not spin, then keep waiting.
			_, _, _ = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return false
		}
		if err != nil {
			return true
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return true
		}
		const eeSize = int(unsafe.Sizeof(unix.SockExtendedErr{}))
		for _, m := range msgs {
			// struct sock_extended_err, then the offender's sockaddr_in.
			if m.Header.Level != unix.IPPROTO_IP || m.Header.Type != unix.IP_RECVERR || len(m.Data) < eeSize+unix.SizeofSockaddrInet4 {
				continue
			}
			var ee unix.SockExtendedErr
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ee)), eeSize), m.Data)
			if ee.Origin != unix.SO_EE_ORIGIN_ICMP || ee.Type != uint8(ipv4.ICMPTypeTimeExceeded) {
				continue
			}
			var off unix.RawSockaddrInet4
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&off)), unix.SizeofSockaddrInet4), m.Data[eeSize:])
			if off.Family != unix.AF_INET {
				continue // no offender address
			}
			hop = netip.AddrFrom4(off.Addr)
		}
		return hop.IsValid()
	})
	return hop
}
