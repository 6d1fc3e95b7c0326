package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ProxyProtocol selects the PROXY protocol header a [Pool] sends to its
// backends (https://www.haproxy.org/download/3.0/doc/proxy-protocol.txt).
type ProxyProtocol int

// PROXY protocol versions.
const (
	ProxyProtocolUnknown ProxyProtocol = iota // treated as ProxyProtocolNone
	ProxyProtocolNone                         // send no header
	ProxyProtocolV1                           // text header
	ProxyProtocolV2                           // binary header with TLVs: authority (SNI or Host), ALPN, unique ID
)

// String returns "none", "v1", "v2" or "unknown".
func (v ProxyProtocol) String() string {
	switch v {
	case ProxyProtocolNone:
		return "none"
	case ProxyProtocolV1:
		return "v1"
	case ProxyProtocolV2:
		return "v2"
	}
	return "unknown"
}

// ParseProxyProtocol parses "none", "v1", "v2" ("" means none).
func ParseProxyProtocol(s string) (ProxyProtocol, error) {
	switch s {
	case "", "none":
		return ProxyProtocolNone, nil
	case "v1":
		return ProxyProtocolV1, nil
	case "v2":
		return ProxyProtocolV2, nil
	}
	return ProxyProtocolUnknown, fmt.Errorf("proxy: bad PROXY protocol version %q: want none, v1 or v2", s)
}

// maxV1Header is the longest PROXY v1 line, CRLF included (spec section 2.1).
const maxV1Header = 107

var v1Prefix = []byte("PROXY ")

// scanProxyHeader looks for a PROXY header at the start of buf. done false
// means more bytes are needed to decide or to complete the header; present
// means a full v1 or v2 signature was seen; when both are true the header is
// n bytes long. err is set when the bytes cannot be a valid header. Safe on
// any input.
func scanProxyHeader(buf []byte) (n int, present, done bool, err error) {
	if m := min(len(buf), len(v1Prefix)); m > 0 && bytes.Equal(buf[:m], v1Prefix[:m]) {
		if m < len(v1Prefix) {
			return 0, false, false, nil // "P", "PR"...: maybe a header, maybe "POST"
		}
		i := bytes.Index(buf[:min(len(buf), maxV1Header)], []byte("\r\n"))
		switch {
		case i >= 0:
			return i + 2, true, true, nil
		case len(buf) >= maxV1Header:
			return 0, true, false, errors.New("v1 header too long")
		}
		return 0, true, false, nil
	}
	sig := proxyproto.SIGV2
	if m := min(len(buf), len(sig)); m > 0 && bytes.Equal(buf[:m], sig[:m]) {
		if m < len(sig) || len(buf) < 16 {
			return 0, m == len(sig), false, nil
		}
		l := 16 + int(binary.BigEndian.Uint16(buf[14:16]))
		if len(buf) < l {
			return 0, true, false, nil
		}
		return l, true, true, nil
	}
	return 0, false, len(buf) > 0, nil
}

// parseProxyHeader decodes one complete header (as delimited by
// scanProxyHeader) with go-proxyproto. For a LOCAL command, or UNSPEC
// addresses, src and dst are invalid and the connection's own addresses are
// kept.
func parseProxyHeader(b []byte) (h *proxyproto.Header, src, dst netip.AddrPort, err error) {
	h, err = proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(b), max(len(b), 16)))
	if err != nil {
		return nil, src, dst, err
	}
	if h.Command.IsProxy() {
		src = netcore.AddrPort(h.SourceAddr)
		dst = netcore.AddrPort(h.DestinationAddr)
	}
	return h, src, dst, nil
}

// uniqueIDs makes PP2_TYPE_UNIQUE_ID values: 8 random bytes naming this
// process, then a counter. A header coming back to us with our prefix is a
// loop.
type uniqueIDs struct {
	prefix [8]byte
	next   atomic.Uint64
}

func newUniqueIDs() *uniqueIDs {
	u := &uniqueIDs{}
	rand.Read(u.prefix[:])
	return u
}

func (u *uniqueIDs) id() []byte {
	b := make([]byte, 16)
	copy(b, u.prefix[:])
	binary.BigEndian.PutUint64(b[8:], u.next.Add(1))
	return b
}

func (u *uniqueIDs) ours(h *proxyproto.Header) bool {
	tlvs, err := h.TLVs()
	if err != nil {
		return false
	}
	for _, t := range tlvs {
		if t.Type == proxyproto.PP2_TYPE_UNIQUE_ID && len(t.Value) == 16 && bytes.Equal(t.Value[:8], u.prefix[:]) {
			return true
		}
	}
	return false
}

// buildProxyHeader returns the header to send to a backend for a client at
// src that connected to dst. alpn is the first protocol the client offered;
// it is sent because the backend cannot know which one it will choose
// otherwise before its own handshake.
func buildProxyHeader(v ProxyProtocol, src, dst netip.AddrPort, authority string, alpn []string, id []byte) ([]byte, error) {
	var ver byte
	switch v {
	case ProxyProtocolV1:
		ver = 1
	case ProxyProtocolV2:
		ver = 2
	default:
		return nil, nil
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if src.Addr().Is4() != dst.Addr().Is4() {
		// Mixed families: express both as IPv6, as HAProxy does.
		src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	h := proxyproto.HeaderProxyFromAddrs(ver, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	if ver == 2 {
		var tlvs []proxyproto.TLV
		if authority != "" {
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(authority)})
		}
		if len(alpn) > 0 {
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte(alpn[0])})
		}
		if id != nil {
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: id})
		}
		if err := h.SetTLVs(tlvs); err != nil {
			return nil, err
		}
	}
	return h.Format()
}
