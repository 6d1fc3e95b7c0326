// Package proxy shares one listening port among many backends, chosen by the
// name the client asked for: the SNI of a TLS ClientHello (passed through,
// never terminated, so the client sees the backend's certificate) or the
// Host of a plain HTTP/1 request.
//
// # Routing
//
// The API is layered: [Proxy.AddSNIRoute], [Proxy.AddHTTPHostRoute] and
// [Proxy.AddALPNRoute] are sugar over [Proxy.AddRoute] with a general
// [Route] (exact and "*.suffix" names, case-insensitive, IDN to punycode, a
// default route, ALPN, source networks, a predicate), and [Proxy.SetRoutes]
// validates a whole table and swaps it in atomically. Matching is a pure
// function of the table and the [Hello]. A [Target] receives the routed
// [Conn]; [Pool] is the usual one.
//
// # Peeking
//
// Serve tells TLS from HTTP by the first byte. The ClientHello is read under
// a byte budget and an absolute deadline (cleared right after), across any
// number of TCP segments and TLS records (post-quantum key shares make Go
// and browser hellos larger than one segment), and parsed by crypto/tls
// itself. Under ECH the outer, public name is routed. Every byte read is
// replayed to the backend. A connection that cannot be routed is closed
// with a [Reason] (not TLS, no SNI, too large, timeout, ...) reported to
// [Proxy.OnReject] and counted in [Proxy.Stats]; plain HTTP clients get a
// status code (404, 403, 502, ...). On kept-alive HTTP connections each
// request's Host is checked again; one for another route gets 421. The
// backend's responses are framed too, to pair each with its request: after
// an Upgrade or CONNECT request nothing more is forwarded until the backend
// answered it, and only a 101 (a 2xx to CONNECT) turns the connection into
// raw bytes; after a refusal the next requests are checked as before.
//
// # Backends
//
// A [Pool] has several backends, active health checks (TCP connect, or a
// TLS handshake whose certificate must cover the name), failover,
// least-connections, round-robin or first-up balancing, and connect retries
// with the peeked bytes replayed. It can send a PROXY protocol v1 or v2
// header (v2 with authority, ALPN and unique ID TLVs, via go-proxyproto).
// Between TCP connections the bytes are then copied with splice on Linux,
// half-closes passed on; connections to vanished peers are closed by TCP
// keepalive and TCP_USER_TIMEOUT rather than deadlines (a silent but live
// connection is not timed out).
//
// # Safety
//
// Inbound PROXY headers are believed only from [Proxy.TrustProxyFrom]. The
// loop guard never dials our listeners or public addresses and recognizes
// both its own connections and its own PROXY headers coming back. Peeks
// are limited per source and in total, connections in total. [Listen] uses
// SO_REUSEPORT so that a new process takes over a port without refusing
// connections.
//
// Typical usage:
//
//	blog := &proxy.Pool{Backends: []string{"192.168.1.20:443"}, ProxyProtocol: proxy.ProxyProtocolV2}
//	var p proxy.Proxy
//	p.AddSNIRoute("blog.example.com", blog)
//	p.AddSNIRoute("*.example.com", &proxy.Pool{Backends: []string{"192.168.1.30:443", "192.168.1.31:443"}})
//	p.AddHTTPHostRoute("blog.example.com", &proxy.Pool{Backends: []string{"192.168.1.20:80"}})
//	for _, addr := range []string{":443", ":80"} {
//		l, err := proxy.Listen("tcp", addr)
//		if err != nil { ... }
//		go p.Serve(l)
//	}
//	...
//	p.Shutdown(ctx)
package proxy
