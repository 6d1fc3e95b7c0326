// Package proxy shares one listening port among many backends, chosen by the
// name the client asked for: the SNI of a TLS ClientHello (passed through,
// never terminated, so the client sees the backend's certificate) or the
// Host of a plain HTTP/1 request.
//
// The ClientHello is read under a byte budget and an absolute deadline,
// across any number of TCP segments and TLS records (post-quantum key shares
// make hellos larger than one segment), and parsed by crypto/tls itself. The
// bytes read are replayed to the backend, after an optional PROXY protocol
// v1/v2 header. Between TCP connections the bytes are then copied with
// splice on Linux.
//
// The API is layered: [Proxy.AddSNIRoute] and [Proxy.AddHTTPHostRoute] are
// sugar over [Proxy.AddRoute] with a general [Route] (exact and wildcard
// names, ALPN, source networks, a predicate), and [Proxy.SetRoutes] swaps the
// whole table atomically. A [Target] receives the routed connection; [Pool]
// is the usual one: several backends, health checks, failover,
// least-connections or round-robin, PROXY headers.
//
// Typical usage:
//
//	blog := &proxy.Pool{Backends: []string{"192.168.1.20:443"}, ProxyProtocol: proxy.ProxyProtocolV2}
//	var p proxy.Proxy
//	p.AddSNIRoute("blog.example.com", blog)
//	p.AddSNIRoute("*.example.com", &proxy.Pool{Backends: []string{"192.168.1.30:443"}})
//	l, err := proxy.Listen("tcp", ":443") // SO_REUSEPORT: restarts refuse nothing
//	if err != nil { ... }
//	go p.Serve(l)
//	...
//	p.Shutdown(ctx)
package proxy
