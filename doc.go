// Package hairpin is a set of Go packages for servers that live behind a NAT
// router: a home or office with one public IPv4 address, a consumer router and
// several machines that should be reachable by name from outside and from
// inside.
//
// The problem has five parts, and each package answers one or more of them:
//
//   - No NAT loopback. Many routers do not hairpin: a LAN client that looks up
//     blog.example.com gets the router's public address and its connection dies.
//     Package [github.com/hairpin-go/hairpin/dnssplit] is a split-horizon DNS
//     server that answers LAN clients with LAN addresses and everyone else with
//     the public address, so one name works everywhere.
//   - One public address, one port 443. The router forwards a port to exactly
//     one machine. Package [github.com/hairpin-go/hairpin/proxy] shares one
//     listening port among many backends, chosen by TLS SNI or HTTP Host,
//     without terminating TLS.
//   - Calls that need a relay. WebRTC peers behind NATs need TURN. Package
//     [github.com/hairpin-go/hairpin/relay] is an embeddable TURN server that
//     announces the public address and never becomes an open proxy into the LAN.
//   - Not knowing what the router does. Package
//     [github.com/hairpin-go/hairpin/nat] measures mapping and filtering
//     behaviour (RFC 4787), hairpinning and mapping lifetime, and serves the
//     RFC 5780 tests as a STUN server.
//   - DNS that fails with everything else. dnssplit answers its own zones
//     authoritatively, caches with serve-stale, fails over between upstreams and
//     transfers zones to secondaries elsewhere.
//
// The packages are independent: none imports another. They are composed in one
// place only, the example binary examples/gateway, which probes the NAT, serves
// split DNS with the probed public address, routes port 443 by name and runs the
// relay with the right public address.
//
// This package holds no code.
package hairpin
