package natlab

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestUDPTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	lab := New(t, Config{Kind: AddressRestricted, UDPTimeout: timeout})
	for _, key := range []string{"net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream"} {
		got, err := lab.readSysctl(Router, key)
		if err != nil {
			t.Fatal(err)
		}
		if got != "2" {
			t.Errorf("%s in Router = %q, want 2", key, got)
		}
		// Seen the same through ip netns exec, and not in LAN1.
		path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		for h, want := range map[Host]string{Router: "2", LAN1: "30"} {
			out, err := lab.Command(h, "cat", path).Output()
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(out)); (got == "2") != (want == "2") {
				t.Errorf("%s in %v = %q (through ip netns exec)", key, h, got)
			}
		}
	}
	for h, want := range map[Host]string{Router: "1", LAN1: "0", Internet: "1"} {
		if got, err := lab.readSysctl(h, "net.ipv4.ip_forward"); err != nil || got != want {
			t.Errorf("ip_forward in %v = %q, %v; want %s", h, got, err, want)
		}
	}

	// The mapping (conntrack entry and the nft sets of address-dependent
	// filtering) admits the server while fresh, and nothing once expired.
	a1, _ := lab.ServerAddrs()
	s1 := udpListen(t, lab, Server, a1)
	s1b := udpListen(t, lab, Server, a1)
	c := udpListen(t, lab, LAN1, netip.Addr{})
	m := mappingOf(t, c, s1)
	if !m.IsValid() {
		t.Fatal("no mapping")
	}
	if !reaches(t, c, s1b, s1, m) {
		t.Fatal("fresh mapping: other port of the same server address filtered")
	}
	time.Sleep(timeout + time.Second) // the behaviour under test is the passing of time
	to := net.UDPAddrFromAddrPort(m)
	for _, s := range []net.PacketConn{s1, s1b} {
		if _, err := s.WriteTo([]byte("late"), to); err != nil {
			t.Fatal(err)
		}
	}
	if p, from, err := recv(c, quiet); err == nil {
		t.Errorf("%q from %v arrived through a mapping idle for longer than UDPTimeout", p, from)
	}
}
