package nat

import (
	"net/netip"

	"github.com/pion/stun/v3"
)

// STUN attribute types from RFC 5780 and RFC 5389 that pion names but does
// not wrap in types we use.
const (
	attrChangeRequest = stun.AttrChangeRequest
	attrPadding       = stun.AttrPadding
	attrResponsePort  = stun.AttrResponsePort
)

// CHANGE-REQUEST flag bits (RFC 5780 section 7.2).
const (
	changeIPFlag   = 0x04
	changePortFlag = 0x02
)

// Address families in STUN address attributes (RFC 5389 section 15.1).
const (
	familyIPv4 = 0x01
	familyIPv6 = 0x02
)

// addrValueOK is the strict length check done before pion decodes an address
// attribute: pion accepts a value longer than 4 bytes whatever its family
// says and zero-fills what is missing, so a truncated value would yield a
// half-zero address. Only 8 bytes for IPv4 and 20 for IPv6 pass, with the
// reserved first byte zero.
func addrValueOK(v []byte) bool {
	if len(v) < 4 || v[0] != 0 {
		return false
	}
	switch v[1] {
	case familyIPv4:
		return len(v) == 4+4
	case familyIPv6:
		return len(v) == 4+16
	}
	return false
}

// getAddr decodes the first attribute of type t (XOR-MAPPED-ADDRESS, or a
// MAPPED-ADDRESS style one: MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS,
// CHANGED-ADDRESS) with pion's codec, after the strict length check. ok is
// false when the attribute is absent or malformed.
func getAddr(m *stun.Message, t stun.AttrType) (netip.AddrPort, bool) {
	v, err := m.Get(t)
	if err != nil || !addrValueOK(v) {
		return netip.AddrPort{}, false
	}
	var (
		ip   []byte
		port int
	)
	if t == stun.AttrXORMappedAddress {
		var a stun.XORMappedAddress
		if a.GetFromAs(m, t) != nil {
			return netip.AddrPort{}, false
		}
		ip, port = a.IP, a.Port
	} else {
		var a stun.MappedAddress
		if a.GetFromAs(m, t) != nil {
			return netip.AddrPort{}, false
		}
		ip, port = a.IP, a.Port
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok || port < 0 || port > 0xffff {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}

// addAddr appends an address attribute of type t for ap to m with pion's
// codec (XOR-encoded for XOR-MAPPED-ADDRESS, against m's transaction ID).
func addAddr(m *stun.Message, t stun.AttrType, ap netip.AddrPort) {
	ip := ap.Addr().Unmap().AsSlice()
	port := int(ap.Port())
	switch t {
	case stun.AttrXORMappedAddress:
		_ = stun.XORMappedAddress{IP: ip, Port: port}.AddTo(m)
	default:
		a := stun.MappedAddress{IP: ip, Port: port}
		_ = a.AddToAs(m, t)
	}
}
