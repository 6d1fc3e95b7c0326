// Package dnssplit is a split-horizon DNS server: the same name answers with a
// LAN address for LAN clients and the public address for everyone else, so
// nobody needs a second "l." hostname when the router does not hairpin.
//
// A [Server] holds an ordered list of [View]s. The view of a query is chosen
// by its source address (first match wins, the last view is the default) and,
// optionally, by the local address it arrived on; an EDNS Client Subnet option
// counts only when a trusted proxy sent it ([SelectView], [Server.Explain]).
// Each view has local data ([Records]: zone-file lines with wildcards, whole
// zone files, RRsets set at run time) answered authoritatively, with
// NXDOMAIN and NODATA carrying the zone's SOA, whether or not any upstream
// works.
//
// Names outside the local data are forwarded to upstreams (UDP with TCP
// fallback, or DNS over TLS; ordered failover or fastest first; answers
// validated by ID, question, rcode and owner names) only for views with
// Recursion; everyone else gets REFUSED, so the server is never an open
// resolver. Forwarded answers are cached per view with negative caching
// (RFC 2308), prefetch, serve-stale with a client response timer (RFC 8767),
// optional persistence to disk and an optional hold on sudden NXDOMAIN;
// identical questions in flight are merged. UDP responses are rate limited
// per client prefix even in the zero value (50/s per /24 or /56; clients with
// a valid DNS cookie, RFC 7873, and the networks of recursive views are
// exempt; RateLimit{Disabled: true} turns it off), TCP connections are
// bounded per address, per network and in total, with the idlest closed
// first under pressure, and ANY is answered minimally (RFC 8482). Zones can be transferred
// (AXFR/IXFR, IP ACL and TSIG) to standard secondaries, which are sent
// NOTIFY when the data changes.
//
// The server reads and writes UDP in batches, answers local and cached names
// on the reader goroutine and hands only queries that wait on upstreams to a
// bounded pool of workers (back-pressure instead of a goroutine per packet);
// it replies from the address a query arrived on (also on dual-stack
// sockets), truncates to the client's EDNS size and pipelines TCP queries.
// [Server.ListenAndServe] binds one UDP socket and one TCP listener without
// SO_REUSEPORT, so a port another server holds is an error. A Server is
// also a dns.Handler for use under miekg/dns's own server.
//
// Typical usage:
//
//	inside, outside := new(dnssplit.Records), new(dnssplit.Records)
//	inside.AddString("blog.example.com. 300 IN A 192.168.1.20")
//	outside.AddString("blog.example.com. 300 IN A 203.0.113.1")
//	srv := &dnssplit.Server{
//		Views: []*dnssplit.View{
//			{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")},
//				Recursion: true, Records: inside},
//			{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: outside},
//		},
//		Upstreams: []dnssplit.Upstream{{Addr: netip.MustParseAddrPort("9.9.9.9:53")}},
//	}
//	pc, _ := net.ListenPacket("udp", ":53")
//	l, _ := net.Listen("tcp", ":53")
//	go srv.ServePacket(pc)
//	go srv.Serve(l)
//	...
//	srv.Shutdown(ctx)
package dnssplit
