package proxy

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// kernelIdle returns a function that reads, with TCP_INFO, how long ago
// data last arrived on either of two TCP sockets; nil if they are not both
// *net.TCPConn. The kernel keeps this per socket at no cost to the copies.
func kernelIdle(a, b net.Conn) func() (time.Duration, bool) {
	ta, ok1 := a.(*net.TCPConn)
	tb, ok2 := b.(*net.TCPConn)
	if !ok1 || !ok2 {
		return nil
	}
	ra, err1 := ta.SyscallConn()
	rb, err2 := tb.SyscallConn()
	if err1 != nil || err2 != nil {
		return nil
	}
	return func() (time.Duration, bool) {
		da, ok1 := lastDataRecv(ra)
		db, ok2 := lastDataRecv(rb)
		if !ok1 || !ok2 {
			return 0, false
		}
		return min(da, db), true
	}
}

func lastDataRecv(rc syscall.RawConn) (time.Duration, bool) {
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, true
}
