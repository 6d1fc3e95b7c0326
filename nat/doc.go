// Package nat discovers how the NAT in front of a host behaves and serves the
// STUN tests that discovery needs.
//
// The Client measures, in RFC 4787 terms, the mapping behaviour (does the
// public address depend on the destination?), the filtering behaviour (who
// may send to a mapping?), hairpinning (does a packet to the NAT's own public
// mapping come back inside?), port preservation, the UDP mapping lifetime
// (opt-in) and the TCP mapping behaviour (opt-in), and derives the classic
// RFC 3489 label for display. It verifies the server before trusting it: a
// server that cannot run a test is reported as such and the behaviour stays
// unknown, never guessed. Every probe is kept in Report.Probes as evidence.
//
// The Server is an RFC 5780 STUN server on two addresses (four sockets:
// both IPs × both ports), or a plain STUN server on one. It is built not to
// be an amplifier.
//
// # Accuracy on lossy links
//
// A missing reply is weak evidence: the Client measures the loss it sees,
// repeats a silent test from fresh sockets until its silence is unlikely to
// be chance, and otherwise reports the verdict as unknown. BenchmarkLabLoss
// measures this in the NAT lab (kernel NAT in network namespaces) with 20 %
// of forwarded UDP dropped each way at the router, against coturn's
// turnutils_natdiscovery on the same lab, server and loss (December 2026,
// 2-core machine):
//
//	runs per kind    tool           wrong verdicts   complete reports   median time
//	30 (4 kinds)     nat.Client     0 of 120         93-100 %           0.27-0.77 s
//	30 (4 kinds)     natdiscovery   16 of 120        23-47 %            3.1-6.3 s
//	200 (4 kinds)    nat.Client     2 of 800         95.5-100 %         0.27-0.46 s
//	300 (3 kinds)    nat.Client     0 of 900         96.3-99.7 %        0.27-0.46 s
//	200 (symmetric)  nat.Client     0 of 200         95.5 %             0.46 s
//
// Without loss both tools are always right, and a full report takes 0.27 s
// here. The wrong verdicts of the 200-run series and of a first 300-run
// one had two causes, both
// fixed for the 300-run series (one-to-one, address- and port-restricted)
// and the 200-run symmetric one after it: a filtering test's fresh socket
// got the local port of an earlier socket that had sent to the server's
// other address, whose NAT mapping and filter state were still alive, so
// fresh sockets now avoid ports a probe used within 5 minutes and a test
// answered on one socket but silent on the other is Unknown; and "UDP
// blocked" once rested on 8 lost sends, so it now needs as many as 50 %
// loss asks (14). The benchmark logs the verdict and the loss measured
// when one is wrong.
//
// STUN encoding comes from github.com/pion/stun/v3; no pion type appears in
// this package's API.
//
// Typical usage:
//
//	c := &nat.Client{Servers: []string{"stun.example.net:3478"}}
//	rep, err := c.Probe(ctx)
//	if err != nil {
//		return err
//	}
//	fmt.Println(rep.Public, rep.Mapping, rep.Filtering, rep.Hairpinning, rep.Classic)
//
// and for the server:
//
//	s := &nat.Server{
//		Primary:   netip.MustParseAddrPort("192.0.2.1:3478"),
//		Alternate: netip.MustParseAddrPort("192.0.2.2:3479"),
//	}
//	go s.ListenAndServe("") // "": Primary, Alternate and their cross pairs
//	defer s.Close()
package nat
