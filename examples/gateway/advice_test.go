package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/nat"
)

func TestAdvice(t *testing.T) {
	tests := []struct {
		name    string
		r       *nat.Report
		want    []string
		notWant []string
	}{
		{"no report", nil, nil, []string{""}},
		{"udp blocked", &nat.Report{}, []string{"UDP may be blocked"}, []string{"public address"}},
		{"home router without hairpin",
			&nat.Report{UDP: true, BehindNAT: nat.Yes, Mapping: nat.EndpointIndependent, Filtering: nat.AddressAndPortDependent,
				Hairpinning: nat.No, Classic: "port-restricted cone"},
			[]string{"port-restricted cone", "does not hairpin: LAN clients must use this DNS server"},
			[]string{"symmetric", "second NAT", "expire"}},
		{"symmetric behind CGN",
			&nat.Report{UDP: true, BehindNAT: nat.Yes, Mapping: nat.AddressAndPortDependent, Hairpinning: nat.Yes, CarrierGradeNAT: nat.Yes},
			[]string{"router hairpins", "TURN relay is needed", "second NAT"},
			[]string{"does not hairpin"}},
		{"carrier-grade NAT, no inbound",
			&nat.Report{UDP: true, BehindNAT: nat.Yes, CarrierGradeNAT: nat.Yes, InboundIPv4: nat.No, InboundIPv4Reason: "carrier-grade NAT and no port mapping"},
			[]string{"no inbound IPv4 is possible on this line (carrier-grade NAT and no port mapping)", "edge: section", "tunnel: section"},
			nil},
		{"inbound possible",
			&nat.Report{UDP: true, BehindNAT: nat.Yes, InboundIPv4: nat.Yes},
			nil,
			[]string{"edge:", "no inbound"}},
		{"public host with lifetime",
			&nat.Report{UDP: true, BehindNAT: nat.No, MappingLifetime: 30 * time.Second, SuggestedKeepalive: 15 * time.Second},
			[]string{"no NAT in the way", "UDP mappings expire after ~30s: keep-alives every 15s"},
			nil},
		{"mapping never expired within the maximum",
			&nat.Report{UDP: true, BehindNAT: nat.Yes, MappingLifetime: 2 * time.Minute, MappingLifetimeAtLeast: true, SuggestedKeepalive: time.Minute},
			[]string{"stayed open for the whole 2m0s measured (they never expired)"},
			[]string{"expire after"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(advice(tt.r), "\n")
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("advice lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if w == "" && got != "" || w != "" && strings.Contains(got, w) {
					t.Errorf("advice should not say %q:\n%s", w, got)
				}
			}
		})
	}
}
