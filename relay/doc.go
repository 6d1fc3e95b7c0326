// Package relay is an embeddable TURN relay (RFC 8656) that is safe by
// default: it cannot be turned into an open proxy into the network it runs
// in, and it knows it may sit behind a NAT.
//
// Typical usage:
//
//	srv := &relay.Server{Realm: "example.com", Secrets: []string{secret}, Public: publicAddr}
//	go srv.ListenAndServe("0.0.0.0:3478") // UDP and TCP, STUN Binding on the same port
//	defer srv.Shutdown(ctx)
//
// Credentials are static long-term users (Users) or TURN REST API ephemeral
// credentials byte-compatible with coturn's use-auth-secret (Secrets): the
// username is "expiry[:user]", the password base64(HMAC-SHA1(secret,
// username)). Several secrets may be live at once for rotation; credentials
// expiring too far ahead are refused; bad credentials get 401.
// CredentialsHandler hands such credentials to web apps as RTCIceServer JSON.
//
// Every peer address a client names (CreatePermission, ChannelBind, Connect,
// Send) and every relayed packet goes through PeerPolicy, after
// canonicalising IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms. Loopback,
// private, CGNAT, link-local (169.254.169.254 included), documentation,
// benchmarking, multicast, reserved and IPv6 unique-local peers are refused
// with 403 unless allowed by prefix. Whatever the policy allows, the relay
// never relays to its own sockets (DenyOwn): its listening addresses, its TCP
// relayed addresses, and its UDP relay sockets under any address but the
// one they advertise.
//
// Behind a NAT that forwards the relay ports, set Public (or call SetPublic
// when the address changes): relay sockets bind the private address and
// clients are told the public one. Traffic between two allocations of the
// same server is relayed in process, so the router need not hairpin.
//
// An Allocate with EVEN-PORT gets an even port whose odd neighbour is held
// for the allocation that claims it with the RESERVATION-TOKEN (RTP and
// RTCP, as coturn does; the engine alone would only remember the number):
// at most 1024 held at once, each for the token's 30 s.
//
// ChannelData, the relay's hot path, never reaches the TURN engine: it is
// recognised by its 4-byte header, its channel looked up in a table the
// engine's events keep, and relayed after the peer policy, the permission
// and the bandwidth cap, both ways without allocating (BenchmarkChannelData:
// 0 allocations per round trip).
//
// Memory: a UDP allocation with one permission and one channel costs 9-11
// kB of Go heap and 2-4 kB of goroutine stack (BenchmarkAllocationMemory,
// 500 allocations, Go 1.26 on linux/amd64, spread over runs), and one relay socket whose
// kernel buffers are charged only while datagrams queue; the default cap of
// 4096 allocations is thus about 50 MB.
//
// Limits are on by default (see Limits) and Stats returns counters as plain
// data for a metrics exporter. The TURN engine is github.com/pion/turn; none
// of its types appear in this package's API.
package relay
