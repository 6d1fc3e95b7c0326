package nat

import (
	"encoding"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// TestReportJSONRoundTrip: a Report with every field set survives
// encoding/json unchanged (every enum has UnmarshalText or UnmarshalJSON).
func TestReportJSONRoundTrip(t *testing.T) {
	ap := netip.MustParseAddrPort
	ev := Evidence{
		Test: FilteringChangePortTest, Local: ap("192.168.1.10:4000"), Server: ap("198.51.100.10:3478"),
		ChangeIP: true, ChangePort: true, Answered: true, Mapped: ap("203.0.113.2:4000"),
		From: ap("198.51.100.10:3479"), Origin: ap("198.51.100.10:3479"), Other: ap("198.51.100.11:3479"),
		ErrorCode: 420, Stray: []netip.AddrPort{ap("198.51.100.10:3478")}, Sent: 3, RTT: 1500 * time.Microsecond,
		Note: "a note",
	}
	in := Report{
		UDP: true, Public: ap("203.0.113.2:4000"), Local: ap("192.168.1.10:4000"), BehindNAT: Yes,
		Mapping: EndpointIndependent, Filtering: AddressDependent, Hairpinning: No, PortPreserved: Yes,
		MappingVariesByServer: No, CarrierGradeNAT: Yes, DoubleNAT: Yes, Classic: "restricted cone",
		Server: ServerCheck{Addr: ap("198.51.100.10:3478"), OtherAddress: ap("198.51.100.11:3479"), RFC5780: Broken,
			Problems: []string{"p"}},
		MappingLifetime: 30 * time.Second, MappingExpired: 32 * time.Second, SuggestedKeepalive: 15 * time.Second,
		TCP:      &TCPReport{Mapping: AddressAndPortDependent, Public: ap("203.0.113.2:5000"), PortPreserved: No, Probes: []Evidence{ev}},
		Probes:   []Evidence{ev, {Test: PathTest}},
		Duration: 1234 * time.Millisecond,
	}
	fillExtra(&in)
	b, err := json.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out Report
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the report:\n in %+v\nout %+v\njson %s", in, out, b)
	}
	// Every field is set: a field the test forgets stays zero and is caught here.
	if z := zeroFields(reflect.ValueOf(in), "Report"); len(z) > 0 {
		t.Errorf("fields left at zero in the test report (set them): %v", z)
	}
}

// zeroFields lists the exported struct fields of v that are zero.
func zeroFields(v reflect.Value, path string) []string {
	var out []string
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		if fv.IsZero() {
			out = append(out, path+"."+f.Name)
			continue
		}
		if fv.Kind() == reflect.Struct && fv.Type().PkgPath() == v.Type().PkgPath() {
			out = append(out, zeroFields(fv, path+"."+f.Name)...)
		}
	}
	return out
}

type textEnum interface {
	encoding.TextMarshaler
	String() string
}

// TestEnumsText: every enum's String form unmarshals back to the value, and
// an unknown name is an error.
func TestEnumsText(t *testing.T) {
	check := func(name string, vals []textEnum, parse func([]byte) (any, error)) {
		for _, v := range vals {
			b, err := v.MarshalText()
			if err != nil {
				t.Errorf("%s %v: MarshalText: %v", name, v, err)
				continue
			}
			if string(b) != v.String() {
				t.Errorf("%s: MarshalText %q, String %q", name, b, v.String())
			}
			got, err := parse(b)
			if err != nil || got != any(v) {
				t.Errorf("%s: UnmarshalText(%q) = %v, %v; want %v", name, b, got, err, v)
			}
		}
		if _, err := parse([]byte("no-such-value")); err == nil {
			t.Errorf("%s: UnmarshalText accepted an unknown name", name)
		}
	}
	var behaviors, answers, supports, tests []textEnum
	for b := BehaviorUnknown; b <= AddressAndPortDependent; b++ {
		behaviors = append(behaviors, b)
	}
	for a := Unknown; a <= No; a++ {
		answers = append(answers, a)
	}
	for s := SupportUnknown; s <= Broken; s++ {
		supports = append(supports, s)
	}
	for k := UnknownTest; k <= TCPTest; k++ {
		tests = append(tests, k)
	}
	check("Behavior", behaviors, func(b []byte) (any, error) { var v Behavior; err := v.UnmarshalText(b); return v, err })
	check("Answer", answers, func(b []byte) (any, error) { var v Answer; err := v.UnmarshalText(b); return v, err })
	check("Support", supports, func(b []byte) (any, error) { var v Support; err := v.UnmarshalText(b); return v, err })
	check("TestKind", tests, func(b []byte) (any, error) { var v TestKind; err := v.UnmarshalText(b); return v, err })
	check("Confirmation", confirmations(), func(b []byte) (any, error) { var v Confirmation; err := v.UnmarshalText(b); return v, err })
	if _, err := Behavior(200).MarshalText(); err == nil {
		t.Error("Behavior(200).MarshalText succeeded")
	}
}

func confirmations() []textEnum {
	return []textEnum{ConfirmationUnknown, Confirmed, Unconfirmed}
}

// fillExtra sets the Report fields beyond the classic verdicts.
func fillExtra(r *Report) {
	r.Loss, r.LossSamples = 0.25, 40
	r.Confidence = Confidence{UDP: Confirmed, Mapping: Confirmed, Filtering: Unconfirmed, Hairpinning: Confirmed}
	r.PortRanges = []PortRange{{First: 40000, Last: 40063}}
	r.RestrictedPorts = Yes
	r.PortMapping = No
	r.InboundIPv4 = No
	r.InboundIPv4Reason = "why"
	r.MappingLifetimeAtLeast = true
}
