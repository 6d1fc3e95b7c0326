package natlab

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func udpListen6(t *testing.T, lab *Lab, h Host, addr netip.Addr) net.PacketConn {
	t.Helper()
	pc, err := lab.ListenPacket(h, "udp6", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestIPv6 checks IPv6 in every kind: routed without NAT (the server sees
// LAN1's own address and port) and filtered as Kind.IPv6Filtering says.
func TestIPv6(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			lab := New(t, Config{Kind: k, IPv6: true, SiteB: PortRestricted,
				Forwards: []Forward{{Proto: "udp", Port: 5000, To: LAN2, ToPort: 5001}}})
			a1, a2 := lab.Addrs6(Server)[0], lab.Addrs6(Server)[1]
			s1 := udpListen6(t, lab, Server, a1)
			s1b := udpListen6(t, lab, Server, a1)
			s2 := udpListen6(t, lab, Server, a2)
			c := udpListen6(t, lab, LAN1, lab.Addr6(LAN1))
			m := mappingOf(t, c, s1)
			var filtering Behavior
			if m.IsValid() {
				if m != apOf(c.LocalAddr()) {
					t.Errorf("server saw %v, want LAN1's own %v (no NAT for IPv6)", m, c.LocalAddr())
				}
				switch {
				case reaches(t, c, s2, s1, m):
					filtering = EndpointIndependent
				case reaches(t, c, s1b, s1, m):
					filtering = AddressDependent
				default:
					filtering = AddressAndPortDependent
				}
			}
			if filtering != k.IPv6Filtering() {
				t.Errorf("IPv6 filtering %v, kind claims %v", filtering, k.IPv6Filtering())
			}

			// A pinhole for the forward; on to SiteBLAN, through its firewall
			// only in reply.
			if k != UDPBlocked {
				u, err := lab.ListenPacket(LAN2, "udp6", "[::]:5001")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { u.Close() })
				p := udpListen6(t, lab, Peer, lab.Addr6(Peer))
				if _, err := p.WriteTo([]byte("pinhole"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.Addr6(LAN2), 5001))); err != nil {
					t.Fatal(err)
				}
				if _, _, err := recv(u, quiet); err != nil {
					t.Errorf("pinhole to LAN2 port 5001: %v", err)
				}
			}
			out, err := lab.Command(SiteBLAN, "ip", "-6", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
			if err != nil || !strings.Contains(string(out), lab.Addr6(SiteBLAN).String()) {
				t.Errorf("SiteBLAN lacks %v: %v\n%s", lab.Addr6(SiteBLAN), err, out)
			}
		})
	}
}
