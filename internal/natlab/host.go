package natlab

import "net/netip"

// Host names one machine (network namespace) of a lab.
type Host uint8

// The hosts of a lab. Site A (LAN1, LAN2, Router and, for DoubleNAT, CGN)
// always exists, as do Internet, Server and Peer; the SiteB hosts exist only
// when Config.SiteB is set.
const (
	// HostUnknown is the zero value.
	HostUnknown Host = iota
	// LAN1 is the first LAN host of site A (the one OneToOne maps and the
	// usual target of port forwards).
	LAN1
	// LAN2 is the second LAN host of site A, on the same Ethernet segment.
	LAN2
	// Router is site A's NAT router.
	Router
	// CGN is the carrier-grade NAT in front of Router (DoubleNAT only).
	CGN
	// Internet routes between the sites, Server and Peer.
	Internet
	// Server is an internet host with two addresses (for RFC 5780 servers).
	Server
	// Peer is another internet host.
	Peer
	// SiteBRouter is the NAT router of the second, independent site.
	SiteBRouter
	// SiteBLAN is the LAN host of the second site.
	SiteBLAN
	// SiteBCGN is the carrier-grade NAT of site B (SiteB: DoubleNAT only).
	SiteBCGN
)

// String returns the host's Go name, e.g. "LAN1".
func (h Host) String() string {
	switch h {
	case LAN1:
		return "LAN1"
	case LAN2:
		return "LAN2"
	case Router:
		return "Router"
	case CGN:
		return "CGN"
	case Internet:
		return "Internet"
	case Server:
		return "Server"
	case Peer:
		return "Peer"
	case SiteBRouter:
		return "SiteBRouter"
	case SiteBLAN:
		return "SiteBLAN"
	case SiteBCGN:
		return "SiteBCGN"
	default:
		return "Unknown"
	}
}

// short is the host's part of its namespace name.
func (h Host) short() string {
	switch h {
	case LAN1:
		return "lan1"
	case LAN2:
		return "lan2"
	case Router:
		return "rtr"
	case CGN:
		return "cgn"
	case Internet:
		return "inet"
	case Server:
		return "srv"
	case Peer:
		return "peer"
	case SiteBRouter:
		return "rtrb"
	case SiteBLAN:
		return "lanb"
	case SiteBCGN:
		return "cgnb"
	default:
		return "unknown"
	}
}

// site describes the addressing of one NATed site.
type site struct {
	router, cgn Host
	lan         []Host
	kind        Kind
	// wan is the inet-facing link of the site (router's or CGN's).
	inetSide, wanSide netip.Prefix // addresses with prefix length
	// cgnLAN and routerWAN address the CGN link (DoubleNAT only).
	cgnLAN, routerWAN netip.Prefix
	// gw is the router's LAN address with the LAN prefix length.
	gw netip.Prefix
	// hostAddrs holds the LAN hosts' addresses, in the order of lan.
	hostAddrs []netip.Addr
	inetIf    string // name of the link in the Internet namespace

	// IPv6 (Config.IPv6): routed, no NAT. gw6 is the router's LAN address
	// and prefix, hostAddrs6 the hosts'; inetSide6/wanSide6 address the
	// site's link to Internet, cgnLAN6/routerWAN6 the CGN link.
	gw6, inetSide6, wanSide6, cgnLAN6, routerWAN6 netip.Prefix
	hostAddrs6                                    []netip.Addr
}

// siteA and siteB return the addressing of the two sites for a kind.
func siteA(k Kind) site {
	s := site{
		router:    Router,
		cgn:       CGN,
		lan:       []Host{LAN1, LAN2},
		kind:      k,
		inetSide:  netip.MustParsePrefix("203.0.113.1/28"),
		wanSide:   netip.MustParsePrefix("203.0.113.2/28"),
		cgnLAN:    netip.MustParsePrefix("100.64.0.1/24"),
		routerWAN: netip.MustParsePrefix("100.64.0.2/24"),
		inetIf:    "sitea",

		gw6:        netip.MustParsePrefix("2001:db8:a1::1/64"),
		inetSide6:  netip.MustParsePrefix("2001:db8:a0::1/64"),
		wanSide6:   netip.MustParsePrefix("2001:db8:a0::2/64"),
		cgnLAN6:    netip.MustParsePrefix("2001:db8:a2::1/64"),
		routerWAN6: netip.MustParsePrefix("2001:db8:a2::2/64"),
		hostAddrs6: []netip.Addr{netip.MustParseAddr("2001:db8:a1::10"), netip.MustParseAddr("2001:db8:a1::11")},
	}
	if k == NoNAT {
		s.gw = netip.MustParsePrefix("192.0.2.1/25")
		s.hostAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}
	} else {
		s.gw = netip.MustParsePrefix("192.168.1.1/24")
		s.hostAddrs = []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("192.168.1.11")}
	}
	return s
}

func siteB(k Kind) site {
	s := site{
		router:    SiteBRouter,
		cgn:       SiteBCGN,
		lan:       []Host{SiteBLAN},
		kind:      k,
		inetSide:  netip.MustParsePrefix("203.0.113.17/28"),
		wanSide:   netip.MustParsePrefix("203.0.113.18/28"),
		cgnLAN:    netip.MustParsePrefix("100.64.1.1/24"),
		routerWAN: netip.MustParsePrefix("100.64.1.2/24"),
		inetIf:    "siteb",

		gw6:        netip.MustParsePrefix("2001:db8:b1::1/64"),
		inetSide6:  netip.MustParsePrefix("2001:db8:b0::1/64"),
		wanSide6:   netip.MustParsePrefix("2001:db8:b0::2/64"),
		cgnLAN6:    netip.MustParsePrefix("2001:db8:b2::1/64"),
		routerWAN6: netip.MustParsePrefix("2001:db8:b2::2/64"),
		hostAddrs6: []netip.Addr{netip.MustParseAddr("2001:db8:b1::10")},
	}
	if k == NoNAT {
		s.gw = netip.MustParsePrefix("192.0.2.129/25")
		s.hostAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.130")}
	} else {
		s.gw = netip.MustParsePrefix("192.168.2.1/24")
		s.hostAddrs = []netip.Addr{netip.MustParseAddr("192.168.2.10")}
	}
	return s
}
