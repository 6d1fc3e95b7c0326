package proxy

import (
	"net"
	"time"
)

// setTCPOptions applies keepalive and TCP_USER_TIMEOUT to c if it is TCP.
// These are the idle timeouts: kernel-side, they keep splice usable.
func setTCPOptions(c net.Conn, ka net.KeepAliveConfig, userTimeout time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	if ka == (net.KeepAliveConfig{}) {
		ka = net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4}
	}
	_ = tc.SetKeepAliveConfig(ka)
	if userTimeout == 0 {
		userTimeout = 2 * time.Minute
	}
	if userTimeout > 0 {
		setUserTimeout(tc, userTimeout)
	}
	_ = tc.SetNoDelay(true)
}
