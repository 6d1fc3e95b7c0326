package nat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestProbeLoopbackRFC5780(t *testing.T) {
	addrs := startServer(t, &Server{})
	c := &Client{Servers: []string{addrs[0].String()}, TCP: false}
	start := time.Now()
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("probe took %v, want < 1s", d)
	}
	for _, p := range rep.Probes {
		t.Logf("%+v", p)
	}
	want := Report{
		UDP: true, BehindNAT: No, Mapping: EndpointIndependent, Filtering: EndpointIndependent,
		Hairpinning: Yes, PortPreserved: Yes, Classic: "open",
	}
	if rep.UDP != want.UDP || rep.BehindNAT != want.BehindNAT || rep.Mapping != want.Mapping ||
		rep.Filtering != want.Filtering || rep.Hairpinning != want.Hairpinning ||
		rep.PortPreserved != want.PortPreserved || rep.Classic != want.Classic {
		t.Errorf("report %+v", rep)
	}
	if rep.Server.RFC5780 != Supported || rep.Server.OtherAddress != addrs[3] {
		t.Errorf("server check %+v", rep.Server)
	}
	if rep.Public.Addr() != netip.MustParseAddr("127.0.0.1") || rep.Public != rep.Local {
		t.Errorf("public %v local %v", rep.Public, rep.Local)
	}
}

func TestScheduleTotal(t *testing.T) {
	s := schedule{rto: 100 * time.Millisecond, sends: 3, last: 4}
	if got := s.total(); got != 700*time.Millisecond {
		t.Errorf("total %v", got)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

func TestProbeIPv6(t *testing.T) {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	s := &Server{}
	done := make(chan error, 1)
	go func() { done <- s.ServePacket(pc) }()
	t.Cleanup(func() { s.Close(); <-done })
	c := &Client{Network: "udp6", Servers: []string{pc.LocalAddr().String(), "127.0.0.1:3478"}}
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.UDP || rep.BehindNAT != No || rep.Public.Addr() != netip.IPv6Loopback() || rep.Classic != "unknown" {
		t.Errorf("IPv6 report: udp %v behindNAT %v public %v classic %q", rep.UDP, rep.BehindNAT, rep.Public, rep.Classic)
	}
	for _, p := range rep.Probes {
		if p.Server.Addr().Is4() {
			t.Errorf("udp6 probe sent to an IPv4 server: %+v", p)
		}
	}
}

func TestProbeNoHairpin(t *testing.T) {
	addrs := startServer(t, &Server{})
	c := &Client{Servers: []string{addrs[0].String()}, NoHairpin: true}
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Hairpinning != Unknown {
		t.Errorf("hairpinning %v with NoHairpin", rep.Hairpinning)
	}
	for _, p := range rep.Probes {
		if p.Test == HairpinTest || p.Test == HairpinBindingTest {
			t.Errorf("hairpin probe sent with NoHairpin: %+v", p)
		}
	}
	if rep.Filtering != EndpointIndependent {
		t.Errorf("filtering %v", rep.Filtering)
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		servers []string
		network string
		want    []string
		err     bool
	}{
		{[]string{"127.0.0.1", "127.0.0.1:3478", "[::1]:5"}, "", []string{"127.0.0.1:3478"}, false},
		{[]string{"127.0.0.1:5", "[::1]:5"}, "udp6", []string{"[::1]:5"}, false},
		{[]string{"127.0.0.1:0"}, "", nil, true},
		{[]string{"127.0.0.1:99999"}, "", nil, true},
		{nil, "", nil, true},
		{[]string{"localhost:7"}, "", []string{"127.0.0.1:7"}, false},
	}
	for _, tt := range tests {
		c := &Client{Servers: tt.servers, Network: tt.network}
		got, err := c.resolve(t.Context(), &recorder{})
		if (err != nil) != tt.err {
			t.Errorf("%v: err %v", tt.servers, err)
			continue
		}
		var gs []string
		for _, g := range got {
			gs = append(gs, g.String())
		}
		if fmt.Sprint(gs) != fmt.Sprint(tt.want) {
			t.Errorf("%v: got %v, want %v", tt.servers, gs, tt.want)
		}
	}
}

// TestProbePlainServers: with plain servers at different IPs the mapping
// behaviour comes from comparing their answers, and filtering stays unknown;
// combined with an RFC 5780 server, that server runs the filtering tests.
func TestProbePlainServers(t *testing.T) {
	var plain []string
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		pc, err := net.ListenPacket("udp4", ip+":0")
		if err != nil {
			t.Skipf("loopback %s: %v", ip, err)
		}
		s := &Server{}
		done := make(chan error, 1)
		go func() { done <- s.ServePacket(pc) }()
		t.Cleanup(func() { s.Close(); <-done })
		plain = append(plain, pc.LocalAddr().String())
	}
	rep, err := (&Client{Servers: plain}).Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mapping != EndpointIndependent || rep.MappingVariesByServer != No || rep.Filtering != BehaviorUnknown ||
		rep.Server.RFC5780 != NotSupported {
		t.Errorf("plain servers: mapping %v varies %v filtering %v server %v", rep.Mapping, rep.MappingVariesByServer, rep.Filtering, rep.Server.RFC5780)
	}

	addrs := startServer(t, &Server{})
	rep, err = (&Client{Servers: append(plain, addrs[0].String())}).Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mapping != EndpointIndependent || rep.Filtering != EndpointIndependent || rep.Server.RFC5780 != Supported ||
		rep.Server.Addr != addrs[0] || rep.MappingVariesByServer != No {
		t.Errorf("combined: mapping %v filtering %v server %+v varies %v", rep.Mapping, rep.Filtering, rep.Server, rep.MappingVariesByServer)
	}
}

// TestProbeDeadServerInList: one silent server among answering ones costs
// a grace period, not the whole retransmission schedule.
func TestProbeDeadServerInList(t *testing.T) {
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	addrs := startServer(t, &Server{})
	c := &Client{Servers: []string{dead.LocalAddr().String(), addrs[0].String()}}
	start := time.Now()
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("probe took %v with one dead server", d)
	}
	if rep.Filtering != EndpointIndependent || rep.Server.Addr != addrs[0] {
		t.Errorf("filtering %v server %+v", rep.Filtering, rep.Server)
	}
}

// TestProbeTimeoutBoundsResolve: Probe promises to end within Timeout, so a
// resolver that never answers must not hold it longer. The resolver dials
// nothing: its Dial waits for its context.
func TestProbeTimeoutBoundsResolve(t *testing.T) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	c := &Client{Servers: []string{"stun.hairpin.invalid:3478"}, Resolver: r, Timeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := c.Probe(t.Context())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("probe with Timeout 200ms took %v behind a silent resolver", d)
	}
	if err == nil {
		t.Error("probe without a resolvable server succeeded")
	}
}
