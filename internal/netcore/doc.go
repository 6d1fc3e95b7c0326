// Package netcore is the network machinery that nat, dnssplit, proxy and relay
// share, kept once so that the four servers cannot drift apart: the accept loop
// and its retry rule, net.Addr to netip conversion with one meaning for
// IPv4-mapped addresses, per-source connection counting, and keyed token
// buckets on golang.org/x/time/rate.
//
// Typical usage, in a server's Serve:
//
//	defer l.Close()
//	return netcore.AcceptLoop(l, s.done, func(c net.Conn) {
//		src := netcore.Addr(c.RemoteAddr())
//		if s.conns.Acquire(src) != netcore.Allowed {
//			c.Close()
//			return
//		}
//		go func() { defer s.conns.Release(src); s.handle(c) }()
//	})
package netcore
