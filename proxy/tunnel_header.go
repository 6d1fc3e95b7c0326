package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Tunnel wire format. Every message is a 4-byte magic naming its kind and
// version, a big-endian uint16 body length, and the body; a reader reads
// exactly that many bytes, so the stream's payload after it is untouched.
//
// Stream header (edge → agent, first bytes of each stream the edge opens):
//
//	"HPS1" len:u16 | proto:u8 | src | dst | name:str | nalpn:u8 alpn:str*
//	addr = n:u8 (4 or 16) bytes:n port:u16;  str = n:u8 bytes:n
//
// Stream reply (agent → edge, one byte): streamOK or a refusal code.
//
// Claim (agent → edge, on the control stream the agent opens first):
//
//	"HPC1" len:u16 | n:u8 name:str*
//
// Claim reply (edge → agent): "HPR1" len:u16 | n:u8 (status:u8)* in claim order.
var (
	magicStream     = [4]byte{'H', 'P', 'S', '1'}
	magicClaim      = [4]byte{'H', 'P', 'C', '1'}
	magicClaimReply = [4]byte{'H', 'P', 'R', '1'}
)

// maxTunnelMsg bounds a message body: a header is at most 1+2*19+254+1+
// 16*256 bytes; 8 KiB leaves room and keeps a hostile peer's claim small.
const maxTunnelMsg = 8 << 10

// maxHeaderALPN bounds the protocols carried in a stream header; a hello
// offers a handful.
const maxHeaderALPN = 16

// maxClaims bounds the names one agent claims per connection.
const maxClaims = 255

// Replies to a stream header.
const (
	streamOK       byte = 0 // the agent took the stream
	streamNotMine  byte = 1 // the agent does not hold the name
	streamBusy     byte = 2 // the agent is at its stream limit
	streamNoTarget byte = 3 // the agent has nowhere to send it
)

// Claim statuses.
const (
	claimOK        byte = 0
	claimForbidden byte = 1 // not among the agent's authorised names
	claimBadName   byte = 2 // not a valid name or wildcard
)

// streamHeader is what travels at the start of a stream: what the edge's
// proxy learned about the client connection.
type streamHeader struct {
	Protocol   Protocol
	ServerName string
	ALPN       []string
	Source     netip.AddrPort
	Dest       netip.AddrPort
}

var errTunnelMsg = errors.New("proxy: bad tunnel message")

func appendMsg(b []byte, magic [4]byte, body []byte) ([]byte, error) {
	if len(body) > maxTunnelMsg {
		return nil, fmt.Errorf("%w: body of %d bytes", errTunnelMsg, len(body))
	}
	b = append(b, magic[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...), nil
}

// readMsg reads one message of kind magic from r.
func readMsg(r io.Reader, magic [4]byte) ([]byte, error) {
	var h [6]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if [4]byte(h[:4]) != magic {
		return nil, fmt.Errorf("%w: magic %q, want %q", errTunnelMsg, h[:4], magic[:])
	}
	n := int(binary.BigEndian.Uint16(h[4:]))
	if n > maxTunnelMsg {
		return nil, fmt.Errorf("%w: body of %d bytes", errTunnelMsg, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

func appendStr(b []byte, s string) ([]byte, error) {
	if len(s) > 255 {
		return nil, fmt.Errorf("%w: string of %d bytes", errTunnelMsg, len(s))
	}
	return append(append(b, byte(len(s))), s...), nil
}

func appendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap()
	switch {
	case !a.IsValid():
		b = append(b, 0)
	case ip.Is4():
		v := ip.As4()
		b = append(append(b, 4), v[:]...)
	default:
		v := ip.As16()
		b = append(append(b, 16), v[:]...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port())
}

// encodeStreamHeader returns the message for h.
func encodeStreamHeader(h *streamHeader) ([]byte, error) {
	if len(h.ALPN) > maxHeaderALPN {
		return nil, fmt.Errorf("%w: %d ALPN protocols", errTunnelMsg, len(h.ALPN))
	}
	body := []byte{byte(h.Protocol)}
	body = appendAddr(body, h.Source)
	body = appendAddr(body, h.Dest)
	var err error
	if body, err = appendStr(body, h.ServerName); err != nil {
		return nil, err
	}
	body = append(body, byte(len(h.ALPN)))
	for _, a := range h.ALPN {
		if body, err = appendStr(body, a); err != nil {
			return nil, err
		}
	}
	return appendMsg(nil, magicStream, body)
}

// dec reads a message body; the first error sticks.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errTunnelMsg, what)
	}
}

func (d *dec) u8() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) bytes(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string { return string(d.bytes(int(d.u8()))) }

func (d *dec) addr() netip.AddrPort {
	n := d.u8()
	if n != 0 && n != 4 && n != 16 {
		d.fail(fmt.Sprintf("address length %d", n))
	}
	b := d.bytes(int(n))
	p := d.bytes(2)
	if d.err != nil {
		return netip.AddrPort{}
	}
	if n == 0 {
		if p[0]|p[1] != 0 {
			d.fail("port without address")
		}
		return netip.AddrPort{}
	}
	ip, _ := netip.AddrFromSlice(b)
	if ip.Is4In6() {
		d.fail("IPv4-mapped address") // sent as 4 bytes: one encoding per address
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(p))
}

func (d *dec) end() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return d.err
}

// parseStreamHeader decodes a stream header body. The name must already be
// in normalized form: the edge sends what its proxy matched. Safe on any
// input.
func parseStreamHeader(body []byte) (*streamHeader, error) {
	d := &dec{b: body}
	h := &streamHeader{Protocol: Protocol(d.u8())}
	h.Source = d.addr()
	h.Dest = d.addr()
	h.ServerName = d.str()
	n := int(d.u8())
	if n > maxHeaderALPN {
		d.fail(fmt.Sprintf("%d ALPN protocols", n))
	}
	for i := 0; i < n && d.err == nil; i++ {
		h.ALPN = append(h.ALPN, d.str())
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if h.Protocol != ProtocolTLS && h.Protocol != ProtocolHTTP {
		return nil, fmt.Errorf("%w: protocol %d", errTunnelMsg, h.Protocol)
	}
	if n, err := NormalizeName(h.ServerName); err != nil || n != h.ServerName {
		return nil, fmt.Errorf("%w: server name %q", errTunnelMsg, h.ServerName)
	}
	return h, nil
}

func encodeClaim(names []string) ([]byte, error) {
	if len(names) > maxClaims {
		return nil, fmt.Errorf("proxy: %d names claimed, at most %d", len(names), maxClaims)
	}
	body := []byte{byte(len(names))}
	var err error
	for _, n := range names {
		if body, err = appendStr(body, n); err != nil {
			return nil, err
		}
	}
	return appendMsg(nil, magicClaim, body)
}

// parseClaim decodes a claim body into the names as sent (not validated).
func parseClaim(body []byte) ([]string, error) {
	d := &dec{b: body}
	n := int(d.u8())
	var names []string
	for i := 0; i < n && d.err == nil; i++ {
		names = append(names, d.str())
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return names, nil
}

func encodeClaimReply(status []byte) ([]byte, error) {
	if len(status) > maxClaims {
		return nil, fmt.Errorf("%w: %d statuses", errTunnelMsg, len(status))
	}
	return appendMsg(nil, magicClaimReply, append([]byte{byte(len(status))}, status...))
}

func parseClaimReply(body []byte, want int) ([]byte, error) {
	d := &dec{b: body}
	n := int(d.u8())
	st := d.bytes(n)
	if err := d.end(); err != nil {
		return nil, err
	}
	if n != want {
		return nil, fmt.Errorf("%w: %d statuses for %d claims", errTunnelMsg, n, want)
	}
	return st, nil
}
