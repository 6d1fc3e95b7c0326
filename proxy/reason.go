package proxy

import (
	"errors"
	"fmt"
)

// Reason says why the proxy did not hand a connection to a backend. It is
// reported to [Proxy.OnReject], counted in [Stats] and logged at Debug level.
type Reason int

// Reasons a connection is closed before reaching a backend.
const (
	ReasonUnknown        Reason = iota
	ReasonNotTLS                // the first bytes are neither a TLS handshake nor an HTTP/1 request
	ReasonBadHello              // TLS framing looked right but the ClientHello did not parse
	ReasonNoSNI                 // a valid ClientHello without server_name and no default route
	ReasonNoHost                // an HTTP request without a usable Host
	ReasonBadRequest            // an HTTP request head that does not parse
	ReasonTooLarge              // the ClientHello or request head exceeded the peek budget
	ReasonTimeout               // the client did not send a complete hello within the peek deadline
	ReasonNoRoute               // no route matched the name
	ReasonDenied                // a route matched but the source address is not allowed
	ReasonLimit                 // a connection or peek limit was reached
	ReasonLoop                  // the connection came back from ourselves
	ReasonBadProxyHeader        // an inbound PROXY header was malformed, or sent by an untrusted source
	ReasonBackendDown           // every backend of the route failed to connect
	ReasonClosed                // the proxy was shutting down, or the client closed during the peek
)

var reasonNames = [...]string{
	ReasonUnknown:        "unknown",
	ReasonNotTLS:         "not TLS",
	ReasonBadHello:       "bad ClientHello",
	ReasonNoSNI:          "no SNI",
	ReasonNoHost:         "no Host",
	ReasonBadRequest:     "bad HTTP request",
	ReasonTooLarge:       "too large",
	ReasonTimeout:        "timeout",
	ReasonNoRoute:        "no route",
	ReasonDenied:         "denied",
	ReasonLimit:          "limit",
	ReasonLoop:           "loop",
	ReasonBadProxyHeader: "bad PROXY header",
	ReasonBackendDown:    "backend down",
	ReasonClosed:         "closed",
}

// String returns a short lower-case description such as "no SNI".
func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// RejectError carries a [Reason] and the underlying cause, if any.
type RejectError struct {
	Reason Reason
	Err    error
}

func (e *RejectError) Error() string {
	if e.Err == nil {
		return "proxy: " + e.Reason.String()
	}
	return "proxy: " + e.Reason.String() + ": " + e.Err.Error()
}

func (e *RejectError) Unwrap() error { return e.Err }

func reject(r Reason, err error) error { return &RejectError{Reason: r, Err: err} }

// ReasonOf returns the Reason carried by err, or ReasonUnknown.
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ReasonUnknown
}

// ErrServerClosed is returned by [Proxy.Serve] after [Proxy.Shutdown] or [Proxy.Close].
var ErrServerClosed = errors.New("proxy: server closed")
