package nat

import "fmt"

// TestKind names one kind of test a probe runs; every Evidence carries one.
type TestKind uint8

// The tests of a probe, in plan order.
const (
	// UnknownTest is the zero value.
	UnknownTest TestKind = iota
	// ResolveTest records a server name that did not resolve.
	ResolveTest
	// BindingTest is socket A's first Binding to each server.
	BindingTest
	// MappingAltIPTest is socket A's Binding to the alternate IP, primary port.
	MappingAltIPTest
	// MappingAltIPPortTest is socket A's Binding to the OTHER-ADDRESS.
	MappingAltIPPortTest
	// VerifyChangeIPTest checks that the server honours CHANGE-REQUEST, on a
	// path socket A has opened.
	VerifyChangeIPTest
	// FilteringControlTest is the plain Binding from a filtering test's fresh
	// socket: it must be answered before the socket's silence counts.
	FilteringControlTest
	// FilteringChangeIPPortTest asks for an answer from the other IP and port.
	FilteringChangeIPPortTest
	// FilteringChangePortTest asks for an answer from the other port.
	FilteringChangePortTest
	// HairpinBindingTest learns a second socket's mapping for the hairpin test.
	HairpinBindingTest
	// HairpinTest sends from the second socket to socket A's public mapping.
	HairpinTest
	// PathTest is a TTL-limited request, for the carrier-grade NAT hint.
	PathTest
	// PortRangeTest is a Binding from one of several fresh sockets whose
	// mapped ports show the NAT's port set.
	PortRangeTest
	// LifetimeTest is part of the UDP mapping lifetime search.
	LifetimeTest
	// TCPTest is one TCP connection of the TCP mapping test.
	TCPTest
	// PortMappingCheckTest is part of CheckPortMapping.
	PortMappingCheckTest
)

var testNames = [...]string{
	"unknown", "resolve", "binding", "mapping-alt-ip", "mapping-alt-ip-port",
	"verify-change-ip", "filtering-control", "filtering-change-ip-port",
	"filtering-change-port", "hairpin-binding", "hairpin", "path", "port-range",
	"lifetime", "tcp", "port-mapping-check",
}

// String returns the test's name, e.g. "filtering-change-port".
func (k TestKind) String() string {
	if int(k) < len(testNames) {
		return testNames[k]
	}
	return fmt.Sprintf("TestKind(%d)", uint8(k))
}

// MarshalText encodes k as its String.
func (k TestKind) MarshalText() ([]byte, error) {
	if int(k) >= len(testNames) {
		return nil, fmt.Errorf("nat: test kind %d has no name", uint8(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText parses the String form.
func (k *TestKind) UnmarshalText(text []byte) error {
	for i, n := range testNames {
		if n == string(text) {
			*k = TestKind(i)
			return nil
		}
	}
	return fmt.Errorf("nat: unknown test %q", text)
}
