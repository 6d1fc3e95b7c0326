package natlab

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Interface names inside a router namespace.
const (
	wanIf = "wan" // towards the internet (or the CGN)
	lanIf = "lan" // the LAN bridge (or, in a CGN, the link to the home router)
)

// layer is one NAT device: a site router or a carrier-grade NAT.
type layer struct {
	kind     Kind       // NoNAT, OneToOne, AddressRestricted, PortRestricted, Symmetric or UDPBlocked
	wan      netip.Addr // the layer's public address
	oneToOne netip.Addr // the LAN host statically mapped (OneToOne)
	hairpin  bool
	forwards []forward
	// v6 adds an IPv6 firewall table (routed, no NAT), with pinholes for
	// forwards6.
	v6        bool
	forwards6 []forward
	// ports restricts masquerade to this public port range (zero: any).
	ports [2]uint16
	// loss is the percentage of forwarded UDP dropped in each direction
	// across the WAN interface (Config.Loss).
	loss int
	// timeout is how long the nft sets that track mappings keep an entry
	// without outgoing traffic; it matches the conntrack UDP timeout.
	timeout time.Duration
}

// forward is a resolved port forward.
type forward struct {
	proto  string // "tcp" or "udp"
	port   uint16
	to     netip.Addr
	toPort uint16
}

// ruleset returns the nft script (for nft -f) that makes a router namespace
// behave as l describes. It is a pure function so that the rules can be read
// and tested without root.
//
// How each behaviour is built:
//   - mapping: masquerade keeps the source port when it can, so a LAN
//     endpoint keeps its public port whatever the destination
//     (endpoint-independent); "fully-random" picks a new port per conntrack
//     entry (address-and-port-dependent).
//   - filtering: conntrack alone lets in only replies from the exact remote
//     address and port (address-and-port-dependent). For address-dependent
//     filtering, a dynamic set remembers (public port, remote address) on
//     egress and a dynamic map remembers public port -> LAN address and
//     port; inbound packets from a remembered address to that port are
//     dnat'ed to the owner. OneToOne dnats everything to LAN1.
//   - hairpinning: the same owner map (or the static 1:1 and port forward
//     rules) is applied to packets from the LAN to the public address, and
//     such packets are snat'ed to the public address so replies return
//     through the router. Without hairpinning they are delivered to the
//     router itself, where nothing listens, and dropped.
//   - the router itself drops unsolicited packets arriving on its WAN side.
func (l layer) ruleset() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	secs := int(l.timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	wan := l.wan.String()
	natted := l.kind != NoNAT
	tracked := natted && (l.kind == AddressRestricted || l.hairpin)

	w("table ip natlab {")
	if tracked {
		w("\t# public port -> LAN address . LAN port, refreshed by outgoing packets")
		w("\tmap udpowner { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %ds; }", secs)
	}
	if l.kind == AddressRestricted {
		w("\t# public port . remote address, for address-dependent filtering")
		w("\tset udpseen { type inet_service . ipv4_addr; flags dynamic,timeout; timeout %ds; }", secs)
	}

	// Destination NAT: port forwards, 1:1, address-dependent filtering, hairpin.
	w("\tchain prerouting {")
	w("\t\ttype nat hook prerouting priority dstnat; policy accept;")
	for _, f := range l.forwards {
		match := fmt.Sprintf("iifname %q ip daddr %s", wanIf, wan)
		if l.hairpin {
			match = "ip daddr " + wan
		}
		w("\t\t%s %s dport %d dnat ip to %s:%d", match, f.proto, f.port, f.to, f.toPort)
	}
	if natted {
		switch l.kind {
		case OneToOne:
			if l.hairpin {
				w("\t\tip daddr %s dnat ip to %s", wan, l.oneToOne)
			} else {
				w("\t\tiifname %q ip daddr %s dnat ip to %s", wanIf, wan, l.oneToOne)
			}
		case AddressRestricted:
			w("\t\tiifname %q ip daddr %s udp dport . ip saddr @udpseen dnat ip to udp dport map @udpowner", wanIf, wan)
		}
		if l.hairpin && l.kind != OneToOne {
			w("\t\tiifname %q ip daddr %s meta l4proto udp dnat ip to udp dport map @udpowner", lanIf, wan)
		}
	}
	w("\t}")

	// Source NAT.
	w("\tchain postrouting {")
	w("\t\ttype nat hook postrouting priority srcnat; policy accept;")
	if l.hairpin {
		w("\t\tiifname %q oifname %q ct status dnat snat ip to %s", lanIf, lanIf, wan)
	}
	if natted {
		switch l.kind {
		case OneToOne:
			w("\t\toifname %q ip saddr %s snat ip to %s", wanIf, l.oneToOne, wan)
			w("\t\toifname %q masquerade", wanIf)
		case Symmetric:
			w("\t\toifname %q masquerade fully-random", wanIf)
		default:
			if l.ports[0] != 0 {
				// Only these public ports exist for this site (MAP-E,
				// CGN port blocks); ICMP and other protocols masquerade
				// without ports.
				w("\t\toifname %q meta l4proto { tcp, udp } masquerade to :%d-%d", wanIf, l.ports[0], l.ports[1])
			}
			w("\t\toifname %q masquerade", wanIf)
		}
	}
	w("\t}")

	// Mapping tracking, after source NAT has rewritten the packet.
	if tracked {
		w("\tchain track {")
		w("\t\ttype filter hook postrouting priority srcnat + 10; policy accept;")
		w("\t\toifname %q meta l4proto udp update @udpowner { udp sport : ct original ip saddr . ct original proto-src }", wanIf)
		if l.kind == AddressRestricted {
			w("\t\toifname %q meta l4proto udp update @udpseen { udp sport . ip daddr }", wanIf)
		}
		w("\t}")
	}

	w("\tchain forward {")
	w("\t\ttype filter hook forward priority filter; policy accept;")
	if l.kind == UDPBlocked {
		w("\t\tmeta l4proto udp drop")
	}
	if l.loss > 0 {
		// A lossy link: each packet is dropped on its own, at random.
		w("\t\toifname %q meta l4proto udp numgen random mod 100 < %d drop", wanIf, l.loss)
		w("\t\tiifname %q meta l4proto udp numgen random mod 100 < %d drop", wanIf, l.loss)
	}
	w("\t}")

	if natted {
		w("\tchain input {")
		w("\t\ttype filter hook input priority filter; policy accept;")
		w("\t\tiifname %q ct state established,related accept", wanIf)
		w("\t\tiifname %q meta l4proto icmp accept", wanIf)
		w("\t\tiifname %q drop", wanIf)
		w("\t}")
	}
	w("}")
	if l.v6 {
		l.ruleset6(w)
	}
	return b.String()
}

// ruleset6 writes the IPv6 table: no NAT; a stateful firewall (replies
// only, ICMPv6 always, pinholes for forwards) unless the kind is NoNAT.
func (l layer) ruleset6(w func(string, ...any)) {
	firewall := l.kind != NoNAT
	w("table ip6 natlab6 {")
	w("\tchain forward {")
	w("\t\ttype filter hook forward priority filter; policy accept;")
	if l.kind == UDPBlocked {
		w("\t\tmeta l4proto udp drop")
	}
	if firewall {
		w("\t\tct state established,related accept")
		w("\t\tmeta l4proto ipv6-icmp accept")
		for _, f := range l.forwards6 {
			w("\t\tiifname %q ip6 daddr %s %s dport %d accept", wanIf, f.to, f.proto, f.toPort)
		}
		w("\t\tiifname %q drop", wanIf)
	}
	w("\t}")
	if firewall {
		w("\tchain input {")
		w("\t\ttype filter hook input priority filter; policy accept;")
		w("\t\tiifname %q ct state established,related accept", wanIf)
		w("\t\tiifname %q meta l4proto ipv6-icmp accept", wanIf)
		w("\t\tiifname %q drop", wanIf)
		w("\t}")
	}
	w("}")
}
