package serve

import (
	"fmt"
	"github.com/hairpin-go/hairpin/internal/netcore"
	"net"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/relay"
)

// RelaySockets are the bound sockets of a relay: section: UDP and TCP on
// every relay.listen address, TLS on every relay.tlsListen address. They
// are all bound before any is served, so a busy port fails the start with
// its reason instead of leaving the relay half up.
type RelaySockets struct {
	pcs        []net.PacketConn
	ls, tlsLs  []net.Listener
	addrs      []net.Addr
	dispatched bool
}

// ListenRelay binds every listener of c. On error nothing stays bound.
func ListenRelay(c *config.Relay) (*RelaySockets, error) {
	r := &RelaySockets{}
	fail := func(err error) (*RelaySockets, error) {
		r.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	for _, a := range c.Listen {
		// The same port for TCP, also when the port is 0.
		pc, l, err := netcore.ListenBoth(a)
		if err != nil {
			return fail(err)
		}
		r.pcs = append(r.pcs, pc)
		r.ls = append(r.ls, l)
		r.addrs = append(r.addrs, pc.LocalAddr())
	}
	for _, a := range c.TLSListen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fail(err)
		}
		r.tlsLs = append(r.tlsLs, l)
		r.addrs = append(r.addrs, l.Addr())
	}
	return r, nil
}

// Addrs returns the bound addresses: each relay.listen address (UDP and
// TCP share it), then each relay.tlsListen address.
func (r *RelaySockets) Addrs() []net.Addr { return r.addrs }

// Serve hands every socket to srv, each in a goroutine that run starts
// ("relay/udp", "relay/tcp", "relay/tls" name them). The Serve methods
// close their socket when they return; srv.Shutdown or Close ends them
// with relay.ErrServerClosed.
func (r *RelaySockets) Serve(srv *relay.Server, run func(part string, serve func() error)) {
	r.dispatched = true
	for _, pc := range r.pcs {
		run("relay/udp", func() error { return srv.ServePacket(pc) })
	}
	for _, l := range r.ls {
		run("relay/tcp", func() error { return srv.Serve(l) })
	}
	for _, l := range r.tlsLs {
		run("relay/tls", func() error { return srv.ServeTLS(l) })
	}
}

// Close closes the sockets if Serve has not handed them over.
func (r *RelaySockets) Close() {
	if r.dispatched {
		return
	}
	for _, pc := range r.pcs {
		pc.Close()
	}
	for _, l := range append(r.ls, r.tlsLs...) {
		l.Close()
	}
}
