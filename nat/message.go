package nat

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/pion/stun/v3"
)

type txID = [stun.TransactionIDSize]byte

// message is what the client learns from one STUN message off the network.
type message struct {
	txid      txID
	request   bool // a Binding request (the hairpin test receives its own)
	success   bool // a Binding success response
	errorCode int  // for error responses, 0 if absent or malformed
	mapped    netip.AddrPort
	origin    netip.AddrPort // RESPONSE-ORIGIN
	other     netip.AddrPort // OTHER-ADDRESS
	size      int
}

var errNotSTUN = errors.New("nat: not a STUN message")

// parseMessage decodes a Binding message. XOR-MAPPED-ADDRESS is preferred to
// MAPPED-ADDRESS; addresses with a bad length or family are treated as absent.
// Anything that is not Binding, or not well formed, is an error.
func parseMessage(b []byte) (message, error) {
	var msg message
	if !stun.IsMessage(b) {
		return msg, errNotSTUN
	}
	m := stun.Message{Raw: b}
	if err := m.Decode(); err != nil {
		return msg, errNotSTUN
	}
	if m.Type.Method != stun.MethodBinding || int(m.Length)+20 != len(b) {
		return msg, errNotSTUN
	}
	if _, err := m.Get(stun.AttrFingerprint); err == nil && stun.Fingerprint.Check(&m) != nil {
		return msg, errNotSTUN // a FINGERPRINT that does not match: not ours
	}
	msg.txid = m.TransactionID
	msg.size = len(b)
	switch m.Type.Class {
	case stun.ClassRequest:
		msg.request = true
		return msg, nil
	case stun.ClassSuccessResponse:
		msg.success = true
	case stun.ClassErrorResponse:
		if v, err := m.Get(stun.AttrErrorCode); err == nil && len(v) >= 4 {
			msg.errorCode = int(v[2]&0x7)*100 + int(v[3])
		}
		return msg, nil
	default:
		return msg, errNotSTUN
	}
	var plain netip.AddrPort
	for _, a := range m.Attributes {
		switch a.Type {
		case stun.AttrXORMappedAddress:
			if ap, ok := decodeXORAddr(a.Value, m.TransactionID); ok && !msg.mapped.IsValid() {
				msg.mapped = ap
			}
		case stun.AttrMappedAddress:
			if ap, ok := decodeAddr(a.Value); ok && !plain.IsValid() {
				plain = ap
			}
		case attrResponseOrigin:
			if ap, ok := decodeAddr(a.Value); ok && !msg.origin.IsValid() {
				msg.origin = ap
			}
		case attrOtherAddress, stun.AttrChangedAddress:
			// CHANGED-ADDRESS is the RFC 3489 name some servers still send.
			if ap, ok := decodeAddr(a.Value); ok && (!msg.other.IsValid() || a.Type == attrOtherAddress) {
				msg.other = ap
			}
		}
	}
	if !msg.mapped.IsValid() {
		msg.mapped = plain
	}
	msg.mapped = unmap(msg.mapped)
	msg.origin = unmap(msg.origin)
	msg.other = unmap(msg.other)
	if !msg.mapped.IsValid() {
		// A success response without a usable mapped address tells us nothing.
		return msg, errors.New("nat: binding response without a mapped address")
	}
	return msg, nil
}

// request is one Binding request the client sends.
type request struct {
	txid         txID
	changeIP     bool
	changePort   bool
	responsePort uint16
}

// encode returns the wire form of r.
func (r request) encode() []byte {
	m := stun.Message{TransactionID: r.txid, Type: stun.BindingRequest}
	m.WriteHeader()
	if r.changeIP || r.changePort {
		var flags byte
		if r.changeIP {
			flags |= changeIPFlag
		}
		if r.changePort {
			flags |= changePortFlag
		}
		m.Add(attrChangeRequest, []byte{0, 0, 0, flags})
	}
	if r.responsePort != 0 {
		v := make([]byte, 2)
		binary.BigEndian.PutUint16(v, r.responsePort)
		m.Add(attrResponsePort, v)
	}
	return m.Raw
}
