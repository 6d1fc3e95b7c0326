package nat

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"
)

// STUN attribute types from RFC 5780 and RFC 5389 that pion names but does
// not wrap in types we can use without exposing them.
const (
	attrChangeRequest  = stun.AttrChangeRequest
	attrPadding        = stun.AttrPadding
	attrResponsePort   = stun.AttrResponsePort
	attrResponseOrigin = stun.AttrResponseOrigin
	attrOtherAddress   = stun.AttrOtherAddress
)

// CHANGE-REQUEST flag bits (RFC 5780 section 7.2).
const (
	changeIPFlag   = 0x04
	changePortFlag = 0x02
)

// magicCookie is the fixed RFC 5389 value; XOR-MAPPED-ADDRESS is XORed with it.
const magicCookie = 0x2112A442

// Address families in STUN address attributes.
const (
	familyIPv4 = 0x01
	familyIPv6 = 0x02
)

// decodeAddr parses a MAPPED-ADDRESS style value (also RESPONSE-ORIGIN and
// OTHER-ADDRESS). It rejects every length that does not match the family, so
// a truncated or padded value never yields a half-zero address.
func decodeAddr(v []byte) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4])
	switch v[1] {
	case familyIPv4:
		if len(v) != 8 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(v[4:8])), port), true
	case familyIPv6:
		if len(v) != 20 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(v[4:20])), port), true
	}
	return netip.AddrPort{}, false
}

// decodeXORAddr parses an XOR-MAPPED-ADDRESS value for transaction txid.
func decodeXORAddr(v []byte, txid [stun.TransactionIDSize]byte) (netip.AddrPort, bool) {
	ap, ok := decodeAddr(v)
	if !ok {
		return ap, false
	}
	var key [16]byte
	binary.BigEndian.PutUint32(key[:4], magicCookie)
	copy(key[4:], txid[:])
	port := ap.Port() ^ uint16(magicCookie>>16)
	if ap.Addr().Is4() {
		b := ap.Addr().As4()
		for i := range b {
			b[i] ^= key[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(b), port), true
	}
	b := ap.Addr().As16()
	for i := range b {
		b[i] ^= key[i]
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), port), true
}

// encodeAddr returns the MAPPED-ADDRESS style value for ap.
func encodeAddr(ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	if a.Is4() {
		b := a.As4()
		v := make([]byte, 8)
		v[1] = familyIPv4
		binary.BigEndian.PutUint16(v[2:4], ap.Port())
		copy(v[4:], b[:])
		return v
	}
	b := a.As16()
	v := make([]byte, 20)
	v[1] = familyIPv6
	binary.BigEndian.PutUint16(v[2:4], ap.Port())
	copy(v[4:], b[:])
	return v
}

// encodeXORAddr returns the XOR-MAPPED-ADDRESS value for ap in transaction txid.
func encodeXORAddr(ap netip.AddrPort, txid [stun.TransactionIDSize]byte) []byte {
	v := encodeAddr(ap)
	var key [16]byte
	binary.BigEndian.PutUint32(key[:4], magicCookie)
	copy(key[4:], txid[:])
	binary.BigEndian.PutUint16(v[2:4], ap.Port()^uint16(magicCookie>>16))
	for i := 4; i < len(v); i++ {
		v[i] ^= key[i-4]
	}
	return v
}

// unmap returns ap with an IPv4-mapped IPv6 address turned into plain IPv4, as
// sockets bound to "udp" report IPv4 peers that way.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
