package nat

import (
	"encoding/json"
	"fmt"
)

// Behavior is a NAT mapping or filtering behaviour in RFC 4787 terms.
type Behavior uint8

const (
	// BehaviorUnknown means the behaviour was not measured or the evidence
	// did not decide it.
	BehaviorUnknown Behavior = iota
	// EndpointIndependent: one mapping (or open filter) for every destination.
	EndpointIndependent
	// AddressDependent: a mapping (or filter) per destination IP address.
	AddressDependent
	// AddressAndPortDependent: a mapping (or filter) per destination IP and port.
	AddressAndPortDependent
)

var behaviorNames = [...]string{"unknown", "endpoint-independent", "address-dependent", "address-and-port-dependent"}

// String returns "unknown", "endpoint-independent", "address-dependent" or
// "address-and-port-dependent".
func (b Behavior) String() string {
	if int(b) < len(behaviorNames) {
		return behaviorNames[b]
	}
	return fmt.Sprintf("Behavior(%d)", uint8(b))
}

// MarshalText encodes b as its String.
func (b Behavior) MarshalText() ([]byte, error) {
	if int(b) >= len(behaviorNames) {
		return nil, fmt.Errorf("nat: behaviour %d has no name", uint8(b))
	}
	return []byte(b.String()), nil
}

// UnmarshalText parses the String form.
func (b *Behavior) UnmarshalText(text []byte) error {
	for i, n := range behaviorNames {
		if n == string(text) {
			*b = Behavior(i)
			return nil
		}
	}
	return fmt.Errorf("nat: unknown behaviour %q", text)
}

// Answer is a yes/no result that may not be known.
type Answer uint8

const (
	// Unknown means not measured, or the evidence did not decide.
	Unknown Answer = iota
	// Yes is a measured yes.
	Yes
	// No is a measured no.
	No
)

// answerOf turns a measured bool into an Answer.
func answerOf(b bool) Answer {
	if b {
		return Yes
	}
	return No
}

// String returns "unknown", "yes" or "no".
func (a Answer) String() string {
	switch a {
	case Unknown:
		return "unknown"
	case Yes:
		return "yes"
	case No:
		return "no"
	}
	return fmt.Sprintf("Answer(%d)", uint8(a))
}

// Known reports whether a is Yes or No.
func (a Answer) Known() bool { return a == Yes || a == No }

// MarshalText encodes a as its String ("unknown", "yes", "no"), for
// configuration files and map keys; JSON uses MarshalJSON.
func (a Answer) MarshalText() ([]byte, error) {
	if a > No {
		return nil, fmt.Errorf("nat: answer %d has no name", uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText parses the String form.
func (a *Answer) UnmarshalText(text []byte) error {
	switch string(text) {
	case "unknown":
		*a = Unknown
	case "yes":
		*a = Yes
	case "no":
		*a = No
	default:
		return fmt.Errorf("nat: unknown answer %q", text)
	}
	return nil
}

// MarshalJSON encodes Yes as true, No as false and Unknown as null.
func (a Answer) MarshalJSON() ([]byte, error) {
	switch a {
	case Yes:
		return []byte("true"), nil
	case No:
		return []byte("false"), nil
	}
	return []byte("null"), nil
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (a *Answer) UnmarshalJSON(b []byte) error {
	var v *bool
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("nat: answer: %w", err)
	}
	switch {
	case v == nil:
		*a = Unknown
	case *v:
		*a = Yes
	default:
		*a = No
	}
	return nil
}

// Support says whether a server proved able to run the RFC 5780 tests.
type Support uint8

const (
	// SupportUnknown: the server did not answer, or was not asked.
	SupportUnknown Support = iota
	// Supported: OTHER-ADDRESS differs in IP and port, the alternate address
	// answers, and CHANGE-REQUEST answers (when any arrived) came from the
	// changed address.
	Supported
	// NotSupported: a plain STUN server (no OTHER-ADDRESS, or CHANGE-REQUEST
	// refused with an error).
	NotSupported
	// Broken: the server claims RFC 5780 but failed a check (bogus
	// OTHER-ADDRESS, silent alternate address, CHANGE-REQUEST ignored).
	Broken
)

// String returns "unknown", "supported", "not-supported" or "broken".
func (s Support) String() string {
	if int(s) < len(supportNames) {
		return supportNames[s]
	}
	return fmt.Sprintf("Support(%d)", uint8(s))
}

var supportNames = [...]string{"unknown", "supported", "not-supported", "broken"}

// MarshalText encodes s as its String.
func (s Support) MarshalText() ([]byte, error) {
	if int(s) >= len(supportNames) {
		return nil, fmt.Errorf("nat: support %d has no name", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses the String form.
func (s *Support) UnmarshalText(text []byte) error {
	for i, n := range supportNames {
		if n == string(text) {
			*s = Support(i)
			return nil
		}
	}
	return fmt.Errorf("nat: unknown RFC 5780 support %q", text)
}

// Classic returns the RFC 3489 label for a mapping and filtering behaviour,
// for display only: "open" when there is no NAT and nothing filters,
// "symmetric UDP firewall" when there is no NAT but a filter (typical of
// IPv6 home routers), "full cone", "restricted cone", "port-restricted cone",
// "symmetric", or "unnamed" for combinations the old labels do not name;
// "unknown" when the evidence does not decide.
func Classic(behindNAT Answer, mapping, filtering Behavior) string {
	if behindNAT == No {
		switch filtering {
		case EndpointIndependent:
			return "open"
		case AddressDependent, AddressAndPortDependent:
			return "symmetric UDP firewall"
		}
		return "unknown"
	}
	switch mapping {
	case EndpointIndependent:
		switch filtering {
		case EndpointIndependent:
			return "full cone"
		case AddressDependent:
			return "restricted cone"
		case AddressAndPortDependent:
			return "port-restricted cone"
		}
		return "unknown"
	case AddressDependent, AddressAndPortDependent:
		if filtering == EndpointIndependent {
			return "unnamed"
		}
		return "symmetric"
	}
	return "unknown"
}
