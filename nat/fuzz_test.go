package nat

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

func FuzzServerRespond(f *testing.F) {
	f.Add(rawRequest(f))
	f.Add(rawRequest(f, stun.RawAttribute{Type: attrChangeRequest, Value: []byte{0, 0, 0, 6}}))
	f.Add(rawRequest(f, stun.RawAttribute{Type: attrResponsePort, Value: []byte{0x12, 0x34}}))
	f.Add(rawRequest(f, stun.RawAttribute{Type: attrPadding, Value: make([]byte, 64)}))
	f.Add(rawRequest(f, stun.RawAttribute{Type: 0x7777, Value: []byte{1, 2, 3}}))
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	addrs := [4]netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:3478"), netip.MustParseAddrPort("192.0.2.1:3479"),
		netip.MustParseAddrPort("192.0.2.2:3478"), netip.MustParseAddrPort("192.0.2.2:3479"),
	}
	from := netip.MustParseAddrPort("198.51.100.7:40000")
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Server{}
		for idx := range 4 {
			for _, tcp := range []bool{false, true} {
				r := s.respond(nil, data, from, idx, addrs, true, tcp)
				if len(r.data) == 0 {
					continue
				}
				// No amplification beyond the fixed attribute overhead.
				if len(r.data) > len(data)+100 {
					t.Fatalf("%d-byte response to a %d-byte request", len(r.data), len(data))
				}
				if r.to.Addr() != from.Addr() {
					t.Fatalf("response sent to %v, request came from %v", r.to, from)
				}
				if tcp && (r.via != idx || r.to != from) {
					t.Fatalf("TCP response redirected to %v via %d", r.to, r.via)
				}
				if _, err := parseMessage(r.data); err != nil {
					t.Fatalf("server produced a message its own client rejects: %v", err)
				}
			}
		}
	})
}

func FuzzParseMessage(f *testing.F) {
	s := &Server{}
	addrs := [4]netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:3478"), netip.MustParseAddrPort("192.0.2.1:3479"),
		netip.MustParseAddrPort("192.0.2.2:3478"), netip.MustParseAddrPort("192.0.2.2:3479"),
	}
	for _, from := range []string{"198.51.100.7:40000", "[2001:db8::1]:5000"} {
		r := s.respond(nil, rawRequest(f), netip.MustParseAddrPort(from), 0, addrs, true, false)
		f.Add(r.data)
	}
	r := s.respond(nil, rawRequest(f, stun.RawAttribute{Type: 0x7777}), netip.MustParseAddrPort("198.51.100.7:1"), 0, addrs, true, false)
	f.Add(r.data)
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parseMessage(data)
		if err != nil {
			return
		}
		if msg.size != len(data) {
			t.Fatalf("size %d for %d bytes", msg.size, len(data))
		}
		if msg.success && !msg.mapped.IsValid() {
			t.Fatal("success without a mapped address accepted")
		}
	})
}
