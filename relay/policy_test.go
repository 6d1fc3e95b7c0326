package relay

import (
	"net/netip"
	"testing"
)

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1", "127.0.0.1"},
		{"::ffff:127.0.0.1", "127.0.0.1"},
		{"::7f00:1", "127.0.0.1"},        // IPv4-compatible
		{"64:ff9b::7f00:1", "127.0.0.1"}, // NAT64
		{"64:ff9b::a9fe:a9fe", "169.254.169.254"},
		{"2002:c0a8:101::1", "192.168.1.1"}, // 6to4
		{"2002:808:808::", "8.8.8.8"},
		{"::1", "::1"},
		{"::", "::"},
		{"fe80::1%eth0", "fe80::1"},
		{"2606:4700::1111", "2606:4700::1111"},
		{"::ffff:0:127.0.0.1", "127.0.0.1"}, // IPv4-translated (RFC 2765)
		{"::ffff:0:a9fe:a9fe", "169.254.169.254"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Canonical(netip.MustParseAddr(tt.in)); got != netip.MustParseAddr(tt.want) {
				t.Errorf("Canonical(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// TestPeerPolicyTranslatedForm: the RFC 2765 IPv4-translated form
// ::ffff:0:a.b.c.d passed the default policy as a global address.
func TestPeerPolicyTranslatedForm(t *testing.T) {
	var p PeerPolicy
	for _, a := range []string{"::ffff:0:127.0.0.1", "::ffff:0:10.0.0.1", "::ffff:0:169.254.169.254"} {
		if d := p.Check(netip.MustParseAddr(a)); d == "" {
			t.Errorf("Check(%s) allowed", a)
		}
	}
}

func TestPeerPolicyDefault(t *testing.T) {
	tests := []struct {
		addr string
		want Denial
	}{
		{"127.0.0.1", DenyLoopback},
		{"127.1.2.3", DenyLoopback},
		{"0.0.0.0", DenyUnspecified},
		{"::1", DenyLoopback},
		{"::", DenyUnspecified},
		{"::ffff:127.0.0.1", DenyLoopback},
		{"::7f00:1", DenyLoopback},
		{"64:ff9b::7f00:1", DenyLoopback},
		{"2002:7f00:1::", DenyLoopback},
		{"10.0.0.1", DenyPrivate},
		{"172.16.5.4", DenyPrivate},
		{"192.168.1.1", DenyPrivate},
		{"::ffff:10.0.0.1", DenyPrivate},
		{"100.64.0.1", DenyShared},
		{"169.254.169.254", DenyLinkLocal},
		{"64:ff9b::a9fe:a9fe", DenyLinkLocal},
		{"fe80::1", DenyLinkLocal},
		{"fe80::1%lo", DenyLinkLocal},
		{"fd00::1", DenyUniqueLocal},
		{"fc00::1", DenyUniqueLocal},
		{"192.0.2.1", DenyDocumentation},
		{"198.51.100.7", DenyDocumentation},
		{"203.0.113.9", DenyDocumentation},
		{"2001:db8::1", DenyDocumentation},
		{"198.18.0.1", DenyBenchmarking},
		{"2001:2::1", DenyBenchmarking},
		{"224.0.0.1", DenyMulticast},
		{"239.255.255.250", DenyMulticast},
		{"ff02::1", DenyMulticast},
		{"240.0.0.1", DenyReserved},
		{"255.255.255.255", DenyReserved},
		{"2001::1", DenyReserved}, // Teredo
		{"64:ff9b:1::1", DenyReserved},
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""},
		{"2002:808:808::1", ""},
		{"2606:4700::1111", ""},
		{"100.128.0.1", ""}, // just outside CGNAT
		{"172.32.0.1", ""},  // just outside 172.16/12
	}
	var p PeerPolicy
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := p.Check(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Check(%s) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
	if got := p.Check(netip.Addr{}); got != DenyInvalid {
		t.Errorf("Check(invalid) = %q", got)
	}
}

func TestPeerPolicyAllowDeny(t *testing.T) {
	p := PeerPolicy{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.5/32"),
			netip.MustParsePrefix("64:ff9b::/96")},
		Deny: []netip.Prefix{netip.MustParsePrefix("8.8.8.0/24"), netip.MustParsePrefix("10.0.0.0/8")},
	}
	tests := []struct {
		addr string
		want Denial
	}{
		{"127.0.0.1", ""},
		{"::ffff:127.0.0.1", ""},
		{"64:ff9b::7f00:1", ""},               // allowed as 127.0.0.1, not as NAT64
		{"64:ff9b::a9fe:a9fe", DenyLinkLocal}, // allowing 64:ff9b::/96 opens nothing
		{"::1", DenyLoopback},                 // only the IPv4 loopback was allowed
		{"10.0.0.5", DenyConfigured},          // deny wins
		{"8.8.8.8", DenyConfigured},
		{"::ffff:8.8.8.8", DenyConfigured},
		{"8.8.4.4", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := p.Check(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Check(%s) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}
