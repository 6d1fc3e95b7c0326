package proxy

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTCPOptions reads back, with getsockopt, what setTCPOptions set on
// both ends of a loopback connection: the defaults and a configuration.
func TestTCPOptions(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	ac, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()

	type want struct{ keepalive, idle, intvl, cnt, user, nodelay int }
	for _, tc := range []struct {
		name string
		ka   net.KeepAliveConfig
		ut   time.Duration
		want want
	}{
		{"defaults", net.KeepAliveConfig{}, 0, want{1, 60, 15, 4, 120000, 1}},
		{"configured", net.KeepAliveConfig{Enable: true, Idle: 1500 * time.Millisecond, Interval: 7 * time.Second, Count: 3}, 9 * time.Second, want{1, 2, 7, 3, 9000, 1}},
		{"net defaults for zero fields", net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second}, 5 * time.Second, want{1, 30, 15, 9, 5000, 1}},
		{"disabled", net.KeepAliveConfig{Enable: false, Idle: -1}, 5 * time.Second, want{0, -1, -1, -1, 5000, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []net.Conn{ac, dc} {
				setTCPOptions(c, tc.ka, tc.ut)
				rc, err := c.(*net.TCPConn).SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				var got want
				rc.Control(func(fd uintptr) {
					get := func(level, opt int) int {
						v, err := unix.GetsockoptInt(int(fd), level, opt)
						if err != nil {
							t.Errorf("getsockopt %d/%d: %v", level, opt, err)
						}
						return v
					}
					got = want{get(unix.SOL_SOCKET, unix.SO_KEEPALIVE), get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE),
						get(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL), get(unix.IPPROTO_TCP, unix.TCP_KEEPCNT),
						get(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT), get(unix.IPPROTO_TCP, unix.TCP_NODELAY)}
				})
				w := tc.want
				if w.idle < 0 { // left alone: whatever the previous case set
					w.idle, w.intvl, w.cnt = got.idle, got.intvl, got.cnt
				}
				if got != w {
					t.Errorf("%v: got %+v, want %+v", c.LocalAddr(), got, w)
				}
			}
		})
	}
}
