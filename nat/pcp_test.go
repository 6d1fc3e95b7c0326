package nat

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The captured responses are miniupnpd 2.3.1's, in the lab (the "denied"
// ones asked for a port a deny rule covers: miniupnpd granted another).
func TestParsePCPCaptured(t *testing.T) {
	nonce := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, tc := range []struct {
		file string
		want pcpResponse
	}{
		{"miniupnpd-pcp-announce-response.bin", pcpResponse{opcode: pcpOpAnnounce}},
		{"miniupnpd-pcp-map-response.bin", pcpResponse{opcode: pcpOpMap, lifetime: 600, hasMap: true, nonce: nonce,
			proto: pcpProtoUDP, internalPort: 4000, externalPort: 4000, externalIP: netip.MustParseAddr("203.0.113.2")}},
		{"miniupnpd-pcp-map-denied-response.bin", pcpResponse{opcode: pcpOpMap, lifetime: 600, hasMap: true, nonce: nonce,
			proto: pcpProtoTCP, internalPort: 4505, externalPort: 4511, externalIP: netip.MustParseAddr("203.0.113.2")}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := parsePCPResponse(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got.epoch = 0 // seconds since the daemon started
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParsePCPBad(t *testing.T) {
	good := readTestdata(t, "miniupnpd-pcp-map-response.bin")
	with := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		ver  bool // errPCPVersion
	}{
		{"empty", nil, false},
		{"natpmp", []byte{0, 0x80, 0, 1, 0, 0, 0, 0}, true},
		{"version 1", with(func(b []byte) []byte { b[0] = 1; return b }), true},
		{"short header", good[:20], false},
		{"not multiple of 4", append(bytes.Clone(good), 0), false},
		{"request", with(func(b []byte) []byte { b[1] = pcpOpMap; return b }), false},
		{"map success truncated", good[:28], false},
		{"option overruns", append(bytes.Clone(good), 1, 0, 0, 8, 0, 0, 0, 0), false},
		{"too long", append(bytes.Clone(good), make([]byte, pcpMaxLen)...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePCPResponse(tc.b)
			if err == nil {
				t.Fatalf("parsed %x", tc.b)
			}
			if got := errors.Is(err, errPCPVersion); got != tc.ver {
				t.Errorf("errPCPVersion %v: %v", got, err)
			}
		})
	}
}

func TestParsePCPOptions(t *testing.T) {
	good := readTestdata(t, "miniupnpd-pcp-map-response.bin")
	// An empty option, then one of 3 bytes padded to 4.
	b := append(bytes.Clone(good), 0x80, 0, 0, 0, 0x12, 0, 0, 3, 1, 2, 3, 0)
	if _, err := parsePCPResponse(b); err != nil {
		t.Fatal(err)
	}
}

func TestPCPRequestLayout(t *testing.T) {
	nonce := [12]byte{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2}
	b := pcpRequest(pcpOpMap, netip.MustParseAddr("192.168.1.10"), 7200, nonce, pcpProtoTCP, 443, 8443)
	want := []byte{
		2, 1, 0, 0, 0, 0, 0x1c, 0x20, // version, MAP, reserved, lifetime 7200
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 10, // client ::ffff:192.168.1.10
		9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, // nonce
		6, 0, 0, 0, 0x01, 0xbb, 0x20, 0xfb, // TCP, reserved, 443, 8443
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, // ::ffff:0.0.0.0
	}
	if !bytes.Equal(b, want) {
		t.Errorf("request\n%x\nwant\n%x", b, want)
	}
}

// FuzzParsePCPResponse: the parser never panics, and what it accepts
// survives a round trip through marshal (options aside).
func FuzzParsePCPResponse(f *testing.F) {
	for _, n := range []string{"miniupnpd-pcp-announce-response.bin", "miniupnpd-pcp-map-response.bin", "miniupnpd-pcp-map-denied-response.bin"} {
		f.Add(readTestdata(f, n))
	}
	f.Add(append(readTestdata(f, "miniupnpd-pcp-map-response.bin"), 0x12, 0, 0, 3, 1, 2, 3, 0))
	f.Add([]byte{2, 0x81, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCPResponse(b)
		if err != nil {
			return
		}
		if len(b) < pcpHeaderLen || len(b) > pcpMaxLen {
			t.Fatalf("accepted %d bytes", len(b))
		}
		r2, err := parsePCPResponse(r.marshal())
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", r, err)
		}
		if r.externalIP.IsValid() && r.externalIP.Is4In6() {
			t.Fatalf("external address %v left mapped", r.externalIP)
		}
		if r2 != r {
			t.Fatalf("round trip\n%+v\n%+v", r, r2)
		}
	})
}
