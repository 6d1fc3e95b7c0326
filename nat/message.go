package nat

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/pion/stun/v3"

	"github.com/hairpin-go/hairpin/internal/netcore"
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
		var ec stun.ErrorCodeAttribute
		if ec.GetFrom(&m) == nil {
			msg.errorCode = int(ec.Code)
		}
		return msg, nil
	default:
		return msg, errNotSTUN
	}
	msg.mapped, _ = getAddr(&m, stun.AttrXORMappedAddress)
	if !msg.mapped.IsValid() {
		msg.mapped, _ = getAddr(&m, stun.AttrMappedAddress)
	}
	msg.origin, _ = getAddr(&m, stun.AttrResponseOrigin)
	msg.other, _ = getAddr(&m, stun.AttrOtherAddress)
	if !msg.other.IsValid() {
		// CHANGED-ADDRESS is the RFC 3489 name some servers still send.
		msg.other, _ = getAddr(&m, stun.AttrChangedAddress)
	}
	msg.mapped = netcore.Canonical(msg.mapped)
	msg.origin = netcore.Canonical(msg.origin)
	msg.other = netcore.Canonical(msg.other)
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
