//go:build !linux

package proxy

import (
	"net"
	"time"
)

func setUserTimeout(*net.TCPConn, time.Duration) {}
