package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeRouter is a PCP/NAT-PMP server on loopback. handle answers a request
// (nil: silence); every request is also sent to reqs.
type fakeRouter struct {
	pc     net.PacketConn
	reqs   chan []byte
	handle func(req []byte) []byte
}

func newFakeRouter(t *testing.T, handle func(req []byte) []byte) *fakeRouter {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRouter{pc: pc, reqs: make(chan []byte, 256), handle: handle}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := append([]byte(nil), buf[:n]...)
			select {
			case r.reqs <- req:
			default:
			}
			if resp := r.handle(req); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
	return r
}

// mapper returns a PortMapper for the fake router (gateway 127.0.0.1, its
// PCP port redirected to the fake's).
func (r *fakeRouter) mapper(t *testing.T, protos ...PortMapProtocol) *PortMapper {
	return &PortMapper{
		Gateway:   netip.MustParseAddr("127.0.0.1"),
		Protocols: protos,
		Timeout:   2 * time.Second,
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != "127.0.0.1:5351" {
				return nil, errors.New("test: unexpected dial to " + addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, r.pc.LocalAddr().String())
		},
		ListenPacket: func(context.Context, string, string) (net.PacketConn, error) {
			return nil, errors.New("test: no SSDP")
		},
	}
}

// pcpServer answers MAP requests like a PCP router granting grant (seconds)
// on 192.0.2.99, or refusing with code when code != 0; ANNOUNCE succeeds.
func pcpServer(grant uint32, code uint8) func([]byte) []byte {
	return func(req []byte) []byte {
		if len(req) < pcpHeaderLen || req[0] != pcpVersion {
			return []byte{0, req[1] | 0x80, 0, 5, 0, 0, 0, 0} // NAT-PMP: unsupported opcode
		}
		r := pcpResponse{opcode: req[1], result: code, epoch: 1}
		if req[1] == pcpOpMap && len(req) >= pcpHeaderLen+pcpMapLen {
			m := req[pcpHeaderLen:]
			r.hasMap = true
			copy(r.nonce[:], m[:12])
			r.proto = m[12]
			r.internalPort = binary.BigEndian.Uint16(m[16:18])
			r.externalPort = binary.BigEndian.Uint16(m[18:20])
			if r.externalPort == 0 {
				r.externalPort = r.internalPort + 1000
			}
			r.externalIP = netip.MustParseAddr("192.0.2.99")
			r.lifetime = min(binary.BigEndian.Uint32(req[4:8]), grant)
		}
		return r.marshal()
	}
}

func TestPortMapperPCP(t *testing.T) {
	r := newFakeRouter(t, pcpServer(2, 0))
	m := r.mapper(t, PortMapPCP)
	got, err := m.Map(t.Context(), TransportTCP, 8443, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := Mapping{Protocol: PortMapPCP, Transport: TransportTCP, Internal: netip.MustParseAddrPort("127.0.0.1:8443"),
		External: netip.MustParseAddrPort("192.0.2.99:9443"), Lifetime: 2 * time.Second, Gateway: netip.MustParseAddr("127.0.0.1")}
	got.Expires = time.Time{}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	first := <-r.reqs
	// The renewal (at half the granted 2 s) repeats the nonce and asks for
	// the external port it got.
	select {
	case renew := <-r.reqs:
		if string(renew[pcpHeaderLen:pcpHeaderLen+12]) != string(first[pcpHeaderLen:pcpHeaderLen+12]) {
			t.Error("renewal with another nonce")
		}
		if p := binary.BigEndian.Uint16(renew[pcpHeaderLen+18:]); p != 9443 {
			t.Errorf("renewal asks for port %d, want 9443", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no renewal")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	// Close deletes: lifetime 0, same nonce.
	var del []byte
	for len(r.reqs) > 0 {
		del = <-r.reqs
	}
	if del == nil || binary.BigEndian.Uint32(del[4:8]) != 0 || string(del[pcpHeaderLen:pcpHeaderLen+12]) != string(first[pcpHeaderLen:pcpHeaderLen+12]) {
		t.Errorf("last request %x is not a delete of the mapping", del)
	}
	if len(m.Mappings()) != 0 {
		t.Errorf("mappings after Close: %v", m.Mappings())
	}
}

func TestPortMapperRefusal(t *testing.T) {
	r := newFakeRouter(t, func(req []byte) []byte {
		if req[0] == natpmpVersion {
			return natpmpResponse{opcode: req[1], result: 2}.marshal()
		}
		return pcpServer(60, 2)(req)
	})
	m := r.mapper(t, PortMapPCP, PortMapNATPMP)
	defer m.Close()
	_, err := m.Map(t.Context(), TransportUDP, 4000, 4000, 0)
	var pe *PortMapError
	if !errors.As(err, &pe) || pe.Protocol != PortMapPCP || pe.Code != 2 {
		t.Fatalf("error %v, want a PCP refusal with code 2", err)
	}
	if errors.Is(err, ErrNoPortMapping) {
		t.Error("a refusal is not ErrNoPortMapping")
	}
	for _, want := range []string{"nat: mapping udp port 4000", "PCP refused: NOT_AUTHORIZED (result code 2)", "NAT-PMP refused: Not Authorized/Refused (result code 2)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if len(m.Mappings()) != 0 {
		t.Error("a refused mapping is kept")
	}
}

// A NAT-PMP-only router answers PCP with version 0: the mapper goes on to
// NAT-PMP.
func TestPortMapperFallsBackToNATPMP(t *testing.T) {
	r := newFakeRouter(t, func(req []byte) []byte {
		if req[0] != natpmpVersion {
			return []byte{0, req[1] | 0x80, 0, 1, 0, 0, 0, 7} // Unsupported Version
		}
		if req[1] == natpmpOpExternal {
			return natpmpResponse{opcode: 0, external: netip.MustParseAddr("192.0.2.98")}.marshal()
		}
		return natpmpResponse{opcode: req[1], internalPort: binary.BigEndian.Uint16(req[4:6]), externalPort: 5000, lifetime: 3600}.marshal()
	})
	m := r.mapper(t)
	m.Protocols = []PortMapProtocol{PortMapPCP, PortMapNATPMP}
	defer m.Close()
	got, err := m.Map(t.Context(), TransportUDP, 4000, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Protocol != PortMapNATPMP || got.External != netip.MustParseAddrPort("192.0.2.98:5000") || got.Lifetime != time.Hour {
		t.Errorf("got %+v", got)
	}
	rep, err := m.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.PCP || !rep.NATPMP || rep.External != netip.MustParseAddr("192.0.2.98") || rep.ExternalFrom != PortMapNATPMP {
		t.Errorf("probe %v (errors %v)", rep, rep.Errors)
	}
	if !errors.Is(rep.Errors[PortMapPCP], errPCPVersion) {
		t.Errorf("PCP error %v", rep.Errors[PortMapPCP])
	}
}

func TestPortMapperSilentRouter(t *testing.T) {
	r := newFakeRouter(t, func([]byte) []byte { return nil })
	m := r.mapper(t, PortMapPCP, PortMapNATPMP)
	m.Timeout = 600 * time.Millisecond
	defer m.Close()
	_, err := m.Map(t.Context(), TransportUDP, 4000, 0, 0)
	if !errors.Is(err, ErrNoPortMapping) {
		t.Fatalf("error %v, want ErrNoPortMapping", err)
	}
	// 250 ms, then 500 ms: two sends per protocol fit in 600 ms.
	if n := len(r.reqs); n < 4 {
		t.Errorf("%d requests, want retransmissions", n)
	}
}

// localConn reports a chosen local address.
type localConn struct {
	net.Conn
	local net.Addr
}

func (c localConn) LocalAddr() net.Addr { return c.local }

func TestPortMapperRefusesPublicAddress(t *testing.T) {
	r := newFakeRouter(t, pcpServer(60, 0))
	m := r.mapper(t, PortMapPCP)
	dial := m.Dial
	m.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return localConn{c, &net.UDPAddr{IP: net.ParseIP("203.0.113.5"), Port: 40000}}, nil
	}
	defer m.Close()
	if _, err := m.Map(t.Context(), TransportTCP, 443, 443, 0); !errors.Is(err, ErrPublicAddress) {
		t.Fatalf("error %v, want ErrPublicAddress", err)
	}
	if len(r.reqs) != 0 {
		t.Errorf("%d requests sent for a public host", len(r.reqs))
	}
}

func TestIsPublic(t *testing.T) {
	for a, want := range map[string]bool{
		"192.168.1.10": false, "10.1.2.3": false, "172.16.0.1": false, "100.64.0.2": false,
		"127.0.0.1": false, "169.254.1.1": false, "fd00::1": false,
		"203.0.113.5": true, "192.0.2.10": true, "8.8.8.8": true, "2001:db8::1": true, "::ffff:198.51.100.1": true,
	} {
		if got := isPublic(netip.MustParseAddr(a)); got != want {
			t.Errorf("isPublic(%s) = %v", a, got)
		}
	}
}

func TestMapArguments(t *testing.T) {
	m := &PortMapper{}
	defer m.Close()
	for _, tc := range []struct {
		tr       Transport
		internal uint16
		life     time.Duration
	}{{TransportUnknown, 1, 0}, {TransportUDP, 0, 0}, {TransportTCP, 1, -time.Second}} {
		if _, err := m.Map(t.Context(), tc.tr, tc.internal, 0, tc.life); err == nil || !strings.HasPrefix(err.Error(), "nat: map: ") {
			t.Errorf("Map(%v, %d, %v): %v", tc.tr, tc.internal, tc.life, err)
		}
	}
}

func TestParseProcRoute(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
wlan0	00000000	FE01A8C0	0003	0	0	600	00000000	0	0	0
eth0	00000000	0101A8C0	0003	0	0	100	00000000	0	0	0
eth1	00000000	0102A8C0	0001	0	0	0	00000000	0	0	0
`
	gw, err := parseProcRoute(strings.NewReader(table))
	if err != nil || gw != netip.MustParseAddr("192.168.1.1") {
		t.Errorf("got %v, %v; want 192.168.1.1 (lowest metric with RTF_GATEWAY)", gw, err)
	}
	if _, err := parseProcRoute(strings.NewReader(strings.Join(strings.Split(table, "\n")[:2], "\n"))); !errors.Is(err, errNoDefaultRoute) {
		t.Errorf("no default route: %v", err)
	}
	if _, err := parseProcRoute(io.LimitReader(strings.NewReader("garbage\nxx yy\n"), 100)); err == nil {
		t.Error("garbage parsed")
	}
}

func TestPortMapEnumsText(t *testing.T) {
	for _, p := range []PortMapProtocol{PortMapUnknown, PortMapPCP, PortMapNATPMP, PortMapUPnP} {
		b, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var q PortMapProtocol
		if err := q.UnmarshalText(b); err != nil || q != p {
			t.Errorf("%v: %q -> %v, %v", p, b, q, err)
		}
	}
	for _, tr := range []Transport{TransportUnknown, TransportUDP, TransportTCP} {
		b, _ := tr.MarshalText()
		var q Transport
		if err := q.UnmarshalText(b); err != nil || q != tr {
			t.Errorf("%v: %q -> %v, %v", tr, b, q, err)
		}
	}
	var p PortMapProtocol
	if err := p.UnmarshalText([]byte("smtp")); err == nil {
		t.Error("unknown protocol accepted")
	}
	if PortMapUPnP.String() != "UPnP IGD" || PortMapProtocol(9).String() != "PortMapProtocol(9)" {
		t.Error("String")
	}
}
