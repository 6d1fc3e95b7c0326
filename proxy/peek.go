package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// peekResult is what routing read from a connection.
type peekResult struct {
	hello *Hello
	buf   []byte // bytes to replay to the backend (an inbound PROXY header removed)
}

// initialPeekBuf is the first read buffer: one PQ ClientHello (~1.7 KB) fits.
const initialPeekBuf = 2048

// peek reads from c until it can route: an optional inbound PROXY header,
// then a complete ClientHello or HTTP request head. It reads at most
// maxPeekBytes, and stops at an absolute deadline that it clears before
// returning. The returned hello is never nil.
func (p *Proxy) peek(c net.Conn, src netip.AddrPort, proto Protocol) (peekResult, error) {
	h := &Hello{Source: src, Dest: netcore.AddrPort(c.LocalAddr())}
	res := peekResult{hello: h}
	trusted := p.trusted(src.Addr())
	budget := p.maxPeekBytes()
	deadline := time.Now().Add(p.peekTimeout())
	if err := c.SetReadDeadline(deadline); err != nil {
		return res, reject(ReasonClosed, err)
	}
	defer c.SetReadDeadline(time.Time{})

	buf := make([]byte, 0, initialPeekBuf)
	var st peekScan
	for {
		if err := p.scanPeek(&res, buf, &st, trusted, proto); err != nil || res.hello.Protocol != ProtocolUnknown {
			res.buf = buf[st.start:]
			return res, err
		}
		if len(buf) >= budget+st.start {
			return res, reject(ReasonTooLarge, nil)
		}
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(2*cap(buf), budget+st.start))
			copy(nb, buf)
			buf = nb
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if n > 0 {
				continue // look at the bytes first; the error repeats
			}
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				return res, reject(ReasonTimeout, nil)
			case errors.Is(err, io.EOF):
				return res, reject(ReasonClosed, io.ErrUnexpectedEOF)
			}
			return res, reject(ReasonClosed, err)
		}
	}
}

// peekScan is the progress of scanPeek over the bytes read so far; each
// call looks only at what the previous ones could not decide, so the peek
// costs time linear in the bytes read, however they are split.
type peekScan struct {
	start      int  // where the client's own bytes begin (after a PROXY header)
	headerDone bool // the PROXY header, if any, is parsed
	hello      helloScan
	headSeen   int // bytes of an HTTP head searched for its end
}

// scanPeek examines buf; it sets res.hello.Protocol once routing can happen.
func (p *Proxy) scanPeek(res *peekResult, buf []byte, st *peekScan, trusted bool, proto Protocol) error {
	h := res.hello
	start, headerDone := &st.start, &st.headerDone
	if !*headerDone {
		n, present, done, err := scanProxyHeader(buf)
		switch {
		case present && !trusted:
			return reject(ReasonBadProxyHeader, errors.New("PROXY header from an untrusted source"))
		case err != nil:
			return reject(ReasonBadProxyHeader, err)
		case !done:
			return nil
		case !present:
			*headerDone = true
		default:
			ph, s, d, err := parseProxyHeader(buf[:n])
			if err != nil {
				return reject(ReasonBadProxyHeader, err)
			}
			if p.ids.ours(ph) {
				return reject(ReasonLoop, errors.New("our own PROXY header came back"))
			}
			if s.IsValid() {
				h.Source, h.Dest = s, d
			}
			*start = n
			*headerDone = true
		}
	}
	b := buf[*start:]
	if len(b) == 0 {
		return nil
	}
	switch {
	case b[0] == recordTypeHandshake && proto == ProtocolHTTP:
		return reject(ReasonBadRequest, errors.New("TLS on a plain HTTP listener"))
	case looksLikeHTTP(b[0]) && proto == ProtocolTLS:
		return reject(ReasonNotTLS, nil)
	case b[0] == recordTypeHandshake:
		n, done, err := st.hello.scan(b)
		if err != nil || !done {
			return err
		}
		info, err := parseHello(p.hardCtx, p.helloCfg, b[:n])
		if err != nil {
			return err
		}
		name, err := NormalizeName(info.serverName)
		if err != nil {
			return reject(ReasonBadHello, err)
		}
		h.ServerName, h.ALPN, h.Protocol = name, info.alpn, ProtocolTLS
	case looksLikeHTTP(b[0]):
		if !methodOK(b) {
			return reject(ReasonNotTLS, nil)
		}
		n, done := scanHeadFrom(b, st.headSeen)
		if !done {
			st.headSeen = len(b)
			return nil
		}
		rh, err := parseHead(b[:n])
		if err != nil {
			return err
		}
		h.ServerName, h.Protocol = rh.host, ProtocolHTTP
	default:
		return reject(ReasonNotTLS, nil)
	}
	return nil
}

func (p *Proxy) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, pf := range p.TrustProxyFrom {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}
