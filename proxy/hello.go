package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// TLS framing constants (RFC 8446 section 5.1, 4).
const (
	recordHeaderLen      = 5
	recordTypeHandshake  = 0x16
	handshakeClientHello = 1
	// maxRecordLen is the largest record we accept while peeking: 2^14 is the
	// plaintext limit, and crypto/tls tolerates 2048 more; so do we.
	maxRecordLen = 16384 + 2048
	// maxHelloMsg is the largest ClientHello handshake message crypto/tls
	// parses (its maxHandshake). TLS allows 2^24, but nothing larger than
	// this could be parsed, so it is reported as too large.
	maxHelloMsg = 65536
)

// scanHello looks at the bytes read so far from a client and reports whether
// they hold a complete ClientHello, carried by one or more handshake records.
// n is the length of the records that carry it. err is a *RejectError when
// buf cannot be the start of a ClientHello. It never reads past buf and is
// safe on any input.
func scanHello(buf []byte) (n int, done bool, err error) {
	var s helloScan
	return s.scan(buf)
}

// helloScan is scanHello's progress over complete records, so that a peek
// that reads a hello piece by piece looks at each record once (rescanning
// from the start would cost time quadratic in the hello's size).
type helloScan struct {
	pos    int     // bytes of complete records examined
	head   [4]byte // handshake message header, possibly split over records
	have   int     // payload bytes seen
	msgLen int     // handshake message length; valid once have >= 4
}

// scan is scanHello on buf, which must extend the buf of the previous call
// on s (the same bytes, maybe more).
func (s *helloScan) scan(buf []byte) (n int, done bool, err error) {
	for {
		if s.have >= 4 && s.have >= 4+s.msgLen {
			return s.pos, true, nil
		}
		if len(buf)-s.pos < recordHeaderLen {
			if s.pos == 0 && len(buf) > 0 && buf[0] != recordTypeHandshake {
				return 0, false, reject(ReasonNotTLS, nil)
			}
			return 0, false, nil
		}
		h := buf[s.pos : s.pos+recordHeaderLen]
		if h[0] != recordTypeHandshake || h[1] != 3 {
			if s.pos == 0 {
				return 0, false, reject(ReasonNotTLS, nil)
			}
			return 0, false, reject(ReasonBadHello, errors.New("non-handshake record inside the ClientHello"))
		}
		l := int(h[3])<<8 | int(h[4])
		if l == 0 || l > maxRecordLen {
			return 0, false, reject(ReasonBadHello, errors.New("bad record length"))
		}
		if len(buf)-s.pos-recordHeaderLen < l {
			return 0, false, nil
		}
		payload := buf[s.pos+recordHeaderLen : s.pos+recordHeaderLen+l]
		s.pos += recordHeaderLen + l
		for len(payload) > 0 && s.have < 4 {
			s.head[s.have] = payload[0]
			s.have++
			payload = payload[1:]
			if s.have == 4 {
				if s.head[0] != handshakeClientHello {
					return 0, false, reject(ReasonBadHello, errors.New("first handshake message is not a ClientHello"))
				}
				s.msgLen = int(s.head[1])<<16 | int(s.head[2])<<8 | int(s.head[3])
				if s.msgLen > maxHelloMsg {
					return 0, false, reject(ReasonTooLarge, nil)
				}
			}
		}
		s.have += len(payload)
	}
}

// helloInfo is what routing needs from a ClientHello.
type helloInfo struct {
	serverName string
	alpn       []string
}

var errHelloCaptured = errors.New("proxy: hello captured")

// parseHello parses the records holding a complete ClientHello (as delimited
// by scanHello) with crypto/tls itself: a server handshake over a replaying
// conn whose GetConfigForClient records the ClientHelloInfo and stops. Under
// ECH crypto/tls, holding no ECH keys, reports the outer (public) name.
func parseHello(ctx context.Context, cfg *tls.Config, records []byte) (helloInfo, error) {
	if cfg == nil {
		cfg = newCaptureConfig()
	}
	rc := &replayConn{r: bytes.NewReader(records)}
	err := tls.Server(rc, cfg).HandshakeContext(ctx)
	if rc.captured {
		return rc.info, nil
	}
	if err == nil {
		err = errors.New("no ClientHello")
	}
	return helloInfo{}, reject(ReasonBadHello, err)
}

// newCaptureConfig returns the config parseHello hands crypto/tls. One can
// serve any number of concurrent parses: the hello is recorded on the
// replayConn that crypto/tls passes back in ClientHelloInfo.Conn.
func newCaptureConfig() *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			if rc, ok := chi.Conn.(*replayConn); ok {
				rc.info = helloInfo{serverName: chi.ServerName, alpn: chi.SupportedProtos}
				rc.captured = true
			}
			return nil, errHelloCaptured
		},
	}
}

// replayConn gives crypto/tls the peeked bytes and swallows what it writes.
type replayConn struct {
	r        *bytes.Reader
	info     helloInfo
	captured bool
}

func (c *replayConn) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if err == io.EOF && n == 0 {
		return 0, io.EOF
	}
	return n, nil
}
func (c *replayConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
