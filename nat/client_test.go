package nat

import (
	"context"
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
