package nat

import (
	"net/netip"
	"testing"
)

func TestParseNATPMPCaptured(t *testing.T) {
	for _, tc := range []struct {
		file string
		want natpmpResponse
	}{
		{"miniupnpd-natpmp-external-response.bin", natpmpResponse{opcode: natpmpOpExternal, external: netip.MustParseAddr("203.0.113.2")}},
		{"miniupnpd-natpmp-map-response.bin", natpmpResponse{opcode: natpmpOpMapTCP, internalPort: 4001, externalPort: 4001, lifetime: 600}},
		{"miniupnpd-natpmp-map-denied-response.bin", natpmpResponse{opcode: natpmpOpMapTCP, internalPort: 4506, externalPort: 4512, lifetime: 600}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := parseNATPMPResponse(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got.epoch = 0
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseNATPMPBad(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":             nil,
		"short":             {0, 0x80, 0, 0, 0, 0, 0},
		"version 2 (PCP)":   {2, 0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"request":           {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"external short":    {0, 0x80, 0, 0, 0, 0, 0, 0, 1, 2},
		"map short":         {0, 0x81, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
		"unknown opcode ok": {0, 0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		if r, err := parseNATPMPResponse(b); err == nil {
			t.Errorf("%s: parsed %+v", name, r)
		}
	}
	// A refusal may stop after the epoch.
	r, err := parseNATPMPResponse([]byte{0, 0x81, 0, 2, 0, 0, 0, 9})
	if err != nil || r.result != 2 || r.epoch != 9 {
		t.Errorf("short refusal: %+v, %v", r, err)
	}
}

// FuzzParseNATPMPResponse: no panic; accepted responses round-trip.
func FuzzParseNATPMPResponse(f *testing.F) {
	for _, n := range []string{"miniupnpd-natpmp-external-response.bin", "miniupnpd-natpmp-map-response.bin", "miniupnpd-natpmp-map-denied-response.bin"} {
		f.Add(readTestdata(f, n))
	}
	f.Add([]byte{0, 0x81, 0, 2, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseNATPMPResponse(b)
		if err != nil {
			return
		}
		r2, err := parseNATPMPResponse(r.marshal())
		if err != nil || r2 != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, r2, err)
		}
	})
}
