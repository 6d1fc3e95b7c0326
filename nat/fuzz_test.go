package nat

import (
	"net/netip"
	"os"
	"path/filepath"
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
	addCaptured(f, "natdiscovery-request.bin", "natdiscovery-padded-request.bin")
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
				// No amplification beyond the four address attributes
				// (IPv4 here: 48 bytes).
				if len(r.data) > len(data)+48 {
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
	addCaptured(f, "coturn-binding-response.bin", "coturn-change-ip-port-response.bin")
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

// addCaptured adds bytes captured from real peers (testdata/*.bin) as seeds.
func addCaptured(f *testing.F, names ...string) {
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// TestCapturedCoturn parses answers captured from coturn 4.6 and the
// requests its natdiscovery sends.
func TestCapturedCoturn(t *testing.T) {
	for _, n := range []string{"coturn-binding-response.bin", "coturn-change-ip-port-response.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		m, err := parseMessage(b)
		if err != nil || !m.success || !m.mapped.IsValid() || !m.origin.IsValid() || !m.other.IsValid() {
			t.Errorf("%s: %+v, %v", n, m, err)
		}
	}
	addrs := [4]netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:3478"), netip.MustParseAddrPort("192.0.2.1:3479"),
		netip.MustParseAddrPort("192.0.2.2:3478"), netip.MustParseAddrPort("192.0.2.2:3479"),
	}
	for _, n := range []string{"natdiscovery-request.bin", "natdiscovery-padded-request.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		r := (&Server{}).respond(nil, b, netip.MustParseAddrPort("198.51.100.7:40000"), 0, addrs, true, false)
		m, err := parseMessage(r.data)
		if err != nil || !m.success {
			t.Errorf("%s: answer %+v, %v", n, m, err)
		}
		if len(r.data) > len(b)+88 {
			t.Errorf("%s: %d-byte answer to %d bytes", n, len(r.data), len(b))
		}
	}
}
