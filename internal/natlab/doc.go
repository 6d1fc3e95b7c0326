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
// Only IPv4 is set up; IPv6 is disabled in every namespace. Each NAT device
// drops unsolicited packets to itself on its WAN side, like a consumer router.
//
// # Names, parallelism and cleanup
//
// Namespaces are named "hpl<pid>-<n>-<host>" (e.g. "hpl4242-3-lan1"), so labs
// of different tests and different test processes never share a name. New
// registers the teardown (kill started commands, delete namespaces) with
// t.Cleanup, and first deletes namespaces whose creating process is gone.
package natlab
