// Package natlab builds real NAT topologies for tests: network namespaces
// joined by veth pairs, where the NAT is the Linux kernel's own (nftables and
// conntrack), one topology per RFC 4787 behaviour, with hairpinning on or off.
//
// It needs root and the ip and nft programs; without them New skips the test
// with a clear reason (or fails it when HAIRPIN_LAB=required, as in CI).
//
// Typical usage:
//
//	func TestDiscovery(t *testing.T) {
//		lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted, UDPTimeout: 20 * time.Second})
//		srv, err := lab.ListenPacket(natlab.Server, "udp4", netip.AddrPortFrom(lab.Addr(natlab.Server), 3478).String())
//		...
//		c, err := lab.ListenPacket(natlab.LAN1, "udp4", ":0")
//		...
//		// c's packets reach srv from lab.PublicAddr(); the mapping is
//		// natlab.PortRestricted.Mapping(), its filtering .Filtering().
//		out, err := lab.Command(natlab.LAN1, "dig", "@198.51.100.10", "example.com").CombinedOutput()
//	}
//
// # Kinds and their ground truth
//
// Each Kind states its RFC 4787 behaviour for LAN1's UDP mappings
// (Kind.Mapping, Kind.Filtering, Kind.Hairpins), and Kind.TCPMapping for TCP.
// The package's tests measure these with plain sockets and check them against
// coturn's turnutils_natdiscovery, so a test built on the lab can assert what
// it discovers against them.
//
//   - NoNAT: public LAN, the router routes and filters nothing.
//   - OneToOne: LAN1 is 1:1 NATed to the public address (EIM, EIF); LAN2 is
//     masqueraded.
//   - AddressRestricted: EIM, address-dependent filtering (nft sets).
//   - PortRestricted: conntrack masquerade, EIM, address-and-port-dependent
//     filtering.
//   - Symmetric: masquerade fully-random, address-and-port-dependent mapping.
//   - UDPBlocked: no UDP is forwarded; TCP is masqueraded.
//   - DoubleNAT: port-restricted home NAT behind a port-restricted CGN.
//
// Two more kinds model lines rather than RFC 4787 behaviours (LineKinds):
//
//   - PortSet: MAP-E-like, masquerade restricted to the public ports
//     PortSetRange (443 not among them).
//   - CarrierNAT: DoubleNAT whose CGN gives the site only the port block
//     CarrierPortBlock; nothing at home can open it.
//
// Config.Loss makes site A's link lossy: the (home) router drops that
// percentage of the UDP packets it forwards across its WAN interface, in
// each direction, at random (nftables numgen), as a bad Wi-Fi or DSL line
// does.
//
// With Config.Hairpin, packets from the LAN to the public address are
// translated as if they came from the internet (UDP mappings, the 1:1 host,
// port forwards) and reach the LAN host from the public address (the router
// rewrites their source, so that replies go back through it). Without it
// they are delivered to the router itself, where nothing listens.
//
// One property of Linux masquerade shows through: two LAN endpoints using the
// same local port towards different destinations may share one public port
// (conntrack only keeps full 5-tuples unique). Address-dependent filtering and
// hairpinning then deliver unsolicited packets to that port's most recent
// sender. Tests that bind the same fixed port on LAN1 and LAN2 should not rely
// on either.
//
// Mapping lifetime is conntrack's UDP timeout in the router namespace
// (Config.UDPTimeout); the nft sets behind address-dependent filtering and
// hairpinning expire with it.
//
// # Topology and addresses
//
// Site A: LAN1 (192.168.1.10) and LAN2 (192.168.1.11) on a bridge in Router
// (LAN 192.168.1.1/24, WAN 203.0.113.2/28). With NoNAT the LAN is public:
// 192.0.2.0/25 (router .1, LAN1 .10, LAN2 .11). With DoubleNAT the Router's
// WAN is 100.64.0.2/24 on a link to CGN (100.64.0.1), whose WAN is
// 203.0.113.2/28.
//
// The Internet namespace routes between 203.0.113.1/28 (site A),
// 203.0.113.17/28 (site B), Server (198.51.100.10 and 198.51.100.11, /25 via
// 198.51.100.1) and Peer (198.51.100.130/25 via 198.51.100.129).
//
// Site B (optional): SiteBLAN 192.168.2.10 behind SiteBRouter (LAN
// 192.168.2.1/24, WAN 203.0.113.18/28); NoNAT: 192.0.2.128/25 (router .129,
// host .130); DoubleNAT: SiteBRouter 100.64.1.2 behind SiteBCGN (100.64.1.1,
// WAN 203.0.113.18).
//
// IPv6 is disabled in every namespace unless Config.IPv6 is set. Then it is
// routed without NAT, from the RFC 3849 prefix: site A's LAN 2001:db8:a1::/64
// (router ::1, LAN1 ::10, LAN2 ::11), its WAN link 2001:db8:a0::/64 (Internet
// ::1, router ::2; with DoubleNAT the CGN is ::2 and the router 2001:db8:a2::2
// behind it), site B's LAN 2001:db8:b1::/64 (SiteBLAN ::10) behind
// 2001:db8:b0::2, Server 2001:db8:5::10 and ::11, Peer 2001:db8:6::130. Every
// home router except NoNAT's runs a stateful firewall (Kind.IPv6Filtering);
// Addr6 and Addrs6 return the addresses. Each NAT device
// drops unsolicited packets to itself on its WAN side, like a consumer router.
//
// Building a lab takes 50-150 ms on an idle machine (a few seconds when
// many labs are built at once: namespace creation is serialised in the
// kernel). New returns once every link is up, so the first packet is not
// lost.
//
// # Names, parallelism and cleanup
//
// Namespaces are named "hpl<pid>-<process start>-<n>-<host>" (e.g.
// "hpl4242-2n9c-3-lan1"; lab.Namespace(host) returns it), so labs
// of different tests and different test processes never share a name. New
// registers the teardown (kill started commands, delete namespaces) with
// t.Cleanup, and first deletes namespaces whose creating process is gone
// (killing what still runs in them). Commands started with Start or StartCmd
// are killed at cleanup, and with the test process if it dies first.
//
// Lab methods are safe for concurrent use. Do, ListenPacket, Listen, Dial,
// Command and CommandContext may be called from any goroutine; Addr, Addrs
// and Namespace fail the test (t.Fatal) for a host the lab does not have, so
// call them from the test's goroutine.
package natlab
