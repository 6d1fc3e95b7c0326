package netcore

import (
	"net"
	"net/netip"
	"testing"
)

type strAddr string

func (s strAddr) Network() string { return "test" }
func (s strAddr) String() string  { return string(s) }

func TestAddrPort(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   net.Addr
		want string
	}{
		{"tcp4", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 80}, "192.0.2.1:80"},
		{"tcp mapped", &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 80}, "192.0.2.1:80"},
		{"udp6 zone", &net.UDPAddr{IP: net.ParseIP("fe80::1"), Port: 53, Zone: "eth0"}, "[fe80::1%eth0]:53"},
		{"udp 16-byte v4", &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7).To16(), Port: 3478}, "198.51.100.7:3478"},
		{"ip", &net.IPAddr{IP: net.ParseIP("2001:db8::1")}, "[2001:db8::1]:0"},
		{"string mapped", strAddr("[::ffff:203.0.113.5]:443"), "203.0.113.5:443"},
		{"pipe", strAddr("pipe"), "invalid AddrPort"},
		{"nil", nil, "invalid AddrPort"},
		{"nil tcp", (*net.TCPAddr)(nil), "invalid AddrPort"},
		{"bad ip", &net.TCPAddr{IP: net.IP{1, 2, 3}, Port: 1}, "invalid AddrPort"},
	} {
		if got := AddrPort(tc.in).String(); got != tc.want {
			t.Errorf("%s: AddrPort = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestNetwork(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.77", "192.0.2.0/24"},
		{"::ffff:192.0.2.77", "192.0.2.0/24"},
		{"2001:db8:1:2ff::1", "2001:db8:1:200::/56"},
		{"fe80::1%eth0", "fe80::/56"},
	} {
		if got := Network(netip.MustParseAddr(tc.in), 24, 56).String(); got != tc.want {
			t.Errorf("Network(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
