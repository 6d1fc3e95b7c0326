package nat

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"
)

// maxPadding bounds the PADDING a request may carry (and so the response
// echoes). RFC 5780 clients pad to a full Ethernet MTU to test
// fragmentation; coturn's natdiscovery -P sends 1500 bytes.
const maxPadding = 1500

// reply is what the server does with one request: send data to to, from
// socket via. An empty data means stay silent.
type reply struct {
	data []byte
	via  int
	to   netip.AddrPort
}

// respond decides the answer to one request that arrived on socket idx from
// from. addrs are the group's socket addresses; rfc5780 says whether all four
// exist. It is a pure function of its inputs (plus counters) so that it can be
// fuzzed and table-tested without sockets. The response is appended to out.
func (s *Server) respond(out, data []byte, from netip.AddrPort, idx int, addrs [4]netip.AddrPort, rfc5780, tcp bool) reply {
	if !stun.IsMessage(data) {
		s.stats.dropped.Add(1)
		return reply{data: out}
	}
	var req stun.Message
	req.Raw = data
	if err := req.Decode(); err != nil {
		s.stats.dropped.Add(1)
		return reply{data: out}
	}
	// Only Binding requests get an answer: never respond to responses or
	// indications (no loops) nor to methods we do not serve (no reflection).
	if req.Type != stun.BindingRequest {
		s.stats.dropped.Add(1)
		return reply{data: out}
	}
	if _, err := req.Get(stun.AttrFingerprint); err == nil && stun.Fingerprint.Check(&req) != nil {
		// A request whose FINGERPRINT does not match is not STUN at all
		// (RFC 5389 section 7.3): drop it silently.
		s.stats.dropped.Add(1)
		return reply{data: out}
	}
	s.stats.requests.Add(1)
	var (
		change       byte
		responsePort uint16
		padding      = -1
		fingerprint  bool
		unknown      []stun.AttrType
		bad          bool
	)
	for _, a := range req.Attributes {
		switch a.Type {
		case attrChangeRequest:
			if len(a.Value) != 4 {
				bad = true
				continue
			}
			change = a.Value[3] & (changeIPFlag | changePortFlag)
		case attrResponsePort:
			// RFC 5780 defines a 2-byte port; some clients send it padded
			// to 4 bytes in the attribute length itself.
			if len(a.Value) != 2 && len(a.Value) != 4 {
				bad = true
				continue
			}
			responsePort = binary.BigEndian.Uint16(a.Value[:2])
			if responsePort == 0 {
				bad = true
			}
		case attrPadding:
			padding = len(a.Value)
		case stun.AttrFingerprint:
			fingerprint = true
		case stun.AttrSoftware, stun.AttrUsername, stun.AttrMessageIntegrity, stun.AttrMessageIntegritySHA256:
			// Understood and ignored: this server has no credentials.
		default:
			if a.Type < 0x8000 {
				unknown = append(unknown, a.Type)
			}
		}
	}
	// CHANGE-REQUEST needs the alternate sockets (RFC 5780 section 6.1);
	// over TCP the source cannot change at all.
	if change != 0 && (!rfc5780 || tcp) {
		unknown = append(unknown, attrChangeRequest)
	}
	if tcp {
		// A TCP response can only travel back on the same connection.
		responsePort = 0
	}
	// PADDING with RESPONSE-PORT would let a client aim a large response at
	// another port of its IP: refused, as RFC 5780 section 6.1 requires.
	if padding >= 0 && responsePort != 0 {
		bad = true
	}
	if padding > maxPadding {
		bad = true
	}
	if len(unknown) > 0 {
		return s.errorReply(out, &req, 420, "Unknown Attribute", unknown, from, idx)
	}
	if bad {
		return s.errorReply(out, &req, 400, "Bad Request", nil, from, idx)
	}

	via := idx
	if change&changeIPFlag != 0 {
		via ^= changeIPBit
	}
	if change&changePortFlag != 0 {
		via ^= changePortBit
	}
	to := from
	if responsePort != 0 {
		to = netip.AddrPortFrom(from.Addr(), responsePort)
	}
	m := stun.Message{Raw: out[:0], TransactionID: req.TransactionID, Type: stun.BindingSuccess}
	m.WriteHeader()
	addAddr(&m, stun.AttrXORMappedAddress, from)
	addAddr(&m, stun.AttrMappedAddress, from)
	if o := addrs[via]; o.IsValid() && !o.Addr().IsUnspecified() {
		addAddr(&m, stun.AttrResponseOrigin, o)
	}
	if rfc5780 {
		if o := addrs[idx^3]; o.IsValid() {
			addAddr(&m, stun.AttrOtherAddress, o)
		}
	}
	if padding > 0 {
		m.Add(attrPadding, make([]byte, padding))
	}
	if fingerprint {
		_ = stun.Fingerprint.AddTo(&m)
	}
	s.stats.responses.Add(1)
	return reply{data: m.Raw, via: via, to: to}
}

func (s *Server) errorReply(out []byte, req *stun.Message, code int, reason string, unknown []stun.AttrType, from netip.AddrPort, idx int) reply {
	m := stun.Message{Raw: out[:0], TransactionID: req.TransactionID, Type: stun.BindingError}
	m.WriteHeader()
	ec := stun.ErrorCodeAttribute{Code: stun.ErrorCode(code), Reason: []byte(reason)}
	_ = ec.AddTo(&m)
	if len(unknown) > 0 {
		ua := stun.UnknownAttributes(unknown)
		_ = ua.AddTo(&m)
	}
	s.stats.errors.Add(1)
	return reply{data: m.Raw, via: idx, to: from}
}
