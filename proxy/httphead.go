package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxHeadBytes bounds an HTTP request head after the first one (the first is
// bounded by Proxy.MaxPeekBytes). 64 KiB is above what browsers send and what
// common servers accept (nginx large_client_header_buffers 4x8k, Go 1 MiB).
const maxHeadBytes = 64 << 10

// looksLikeHTTP reports whether b can start an HTTP/1 request line: a method
// token of upper-case letters.
func looksLikeHTTP(b byte) bool { return 'A' <= b && b <= 'Z' }

// maxMethodLen bounds the method token while sniffing; the longest
// registered methods (UPDATEREDIRECTREF, BASELINE-CONTROL) are 17 bytes.
const maxMethodLen = 24

// methodOK reports whether b may still start an HTTP request line: upper-case
// letters, '-' or '_' up to the first space. It lets SSH banners and other
// protocols be refused at once instead of at the peek deadline.
func methodOK(b []byte) bool {
	for i, c := range b {
		switch {
		case c == ' ':
			return i > 0
		case i >= maxMethodLen:
			return false
		case 'A' <= c && c <= 'Z', c == '-' || c == '_':
		default:
			return false
		}
	}
	return true
}

// scanHead reports whether buf holds a complete request head and its length,
// blank line included. Bare LF line ends are accepted, as net/http does.
func scanHead(buf []byte) (n int, done bool) {
	return scanHeadFrom(buf, 0)
}

// scanHeadFrom is scanHead for a buf whose first scanned bytes were already
// searched by scanHead without success (the same bytes, maybe more now): it
// looks only at the end that could complete the blank line, so that a head
// read piece by piece is searched in linear time.
func scanHeadFrom(buf []byte, scanned int) (n int, done bool) {
	for i := max(scanned-2, 0); i < len(buf); i++ {
		if buf[i] != '\n' {
			continue
		}
		if i+1 < len(buf) && buf[i+1] == '\n' {
			return i + 2, true
		}
		if i+2 < len(buf) && buf[i+1] == '\r' && buf[i+2] == '\n' {
			return i + 3, true
		}
	}
	return 0, false
}

// requestHead is what the proxy needs from one HTTP/1 request head.
type requestHead struct {
	host    string // normalized, without port; "" if absent
	bodyLen int64  // Content-Length, 0 if none
	chunked bool
	upgrade bool // the connection leaves HTTP after this request (Upgrade or CONNECT)
	method  string
}

// parseHead parses one complete request head with net/http, which also
// rejects the framing ambiguities request smuggling relies on (conflicting
// Content-Length, Transfer-Encoding with Content-Length, unknown codings).
// Absolute-form request targets take precedence over the Host header
// (RFC 9112 section 3.2.2).
func parseHead(head []byte) (requestHead, error) {
	var rh requestHead
	// net/http drops Content-Length when Transfer-Encoding is present and
	// keeps the first of several Host lines; the backend may read the
	// other one (request smuggling, route bypass). Refuse both (RFC 9112
	// sections 6.1 and 3.2 allow it).
	if n := headerCount(head, "content-length"); n > 0 && headerCount(head, "transfer-encoding") > 0 {
		return rh, reject(ReasonBadRequest, errors.New("both Transfer-Encoding and Content-Length"))
	}
	if headerCount(head, "host") > 1 {
		return rh, reject(ReasonBadRequest, errors.New("more than one Host"))
	}
	hr := getHeadReader(head)
	defer putHeadReader(hr)
	req, err := http.ReadRequest(&hr.br)
	if err != nil {
		return rh, reject(ReasonBadRequest, err)
	}
	if req.ContentLength > 0 {
		rh.bodyLen = req.ContentLength
	}
	for _, te := range req.TransferEncoding {
		if te == "chunked" {
			rh.chunked = true
		}
	}
	rh.method = req.Method
	rh.upgrade = req.Method == http.MethodConnect ||
		(req.Header.Get("Upgrade") != "" && headerHasToken(req.Header["Connection"], "upgrade"))
	host, err := hostWithoutPort(req.Host)
	if err != nil {
		return rh, reject(ReasonNoHost, err)
	}
	// An absolute-form target routes by its authority, but a backend that
	// picks its site by the Host line would serve the Host's site: a request
	// for a public route reaching a restricted one. RFC 9112 section 3.2.2
	// lets a server replace Host with the authority; we forward heads
	// verbatim, so a Host that names another host is refused instead.
	if req.URL.Host != "" {
		if hv, ok := headerValue(head, "host"); ok {
			h, err := hostWithoutPort(hv)
			if err != nil {
				return rh, reject(ReasonNoHost, err)
			}
			if h != host {
				return rh, reject(ReasonBadRequest, fmt.Errorf("absolute-form target %q with Host %q", req.URL.Host, hv))
			}
		}
	}
	rh.host = host
	return rh, nil
}

// headerValue returns the value of the first header line of head named name
// (lower case), with the surrounding white space removed.
func headerValue(head []byte, name string) (string, bool) {
	lines := bytes.Split(head, []byte("\n"))
	for _, line := range lines[1:] {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			return string(bytes.TrimSpace(v)), true
		}
	}
	return "", false
}

// headerCount counts the header lines of head named name (lower case).
func headerCount(head []byte, name string) int {
	n := 0
	lines := bytes.Split(head, []byte("\n"))
	for _, line := range lines[1:] {
		k, _, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			n++
		}
	}
	return n
}

func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// hostWithoutPort normalizes an HTTP Host ("Example.COM:8080", "[::1]:80",
// "bücher.example") for route matching.
func hostWithoutPort(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	host := h
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", fmt.Errorf("bad host %q", h)
		}
		host = h[1:end]
		if rest := h[end+1:]; rest != "" && !validPort(strings.TrimPrefix(rest, ":")) {
			return "", fmt.Errorf("bad port in host %q", h)
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			return "", fmt.Errorf("bad host %q: %w", h, err)
		}
		return a.String(), nil
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if !validPort(h[i+1:]) {
			return "", fmt.Errorf("bad port in host %q", h)
		}
		host = h[:i]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.String(), nil
	}
	return NormalizeName(host)
}

func validPort(p string) bool {
	if p == "" {
		return true // "example.com:" is allowed by RFC 3986
	}
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0 || p == "0"
}

// errMisdirected reports a request on a kept-alive connection whose Host
// belongs to another route. None of its bytes were forwarded.
var errMisdirected = errors.New("proxy: request for another route on a kept-alive connection")

// misdirectedResponse is sent to the client after the backend has answered
// the requests before the misdirected one (RFC 9110 section 15.5.20).
const misdirectedResponse = "HTTP/1.1 421 Misdirected Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

// httpStatus is the response sent to a plain HTTP client the proxy cannot
// route, so that a browser shows why instead of "connection reset".
var httpStatus = map[Reason]string{
	ReasonNoRoute:     "404 Not Found",
	ReasonNotTLS:      "400 Bad Request", // plain HTTP sent to a TLS-only listener
	ReasonNoHost:      "400 Bad Request",
	ReasonBadRequest:  "400 Bad Request",
	ReasonDenied:      "403 Forbidden",
	ReasonTooLarge:    "431 Request Header Fields Too Large",
	ReasonLimit:       "503 Service Unavailable",
	ReasonBackendDown: "502 Bad Gateway",
}

// replyWait bounds the write of an error response to a client.
const replyWait = time.Second

// replyHTTP writes the error response for r, if it has one.
func replyHTTP(c net.Conn, r Reason) {
	status, ok := httpStatus[r]
	if !ok {
		return
	}
	c.SetWriteDeadline(time.Now().Add(replyWait))
	io.WriteString(c, "HTTP/1.1 "+status+"\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "+
		strconv.Itoa(len(status)+1)+"\r\n\r\n"+status+"\n")
}

// prefixConn reads the peeked bytes, then the connection (through r if set).
type prefixConn struct {
	buf []byte
	c   net.Conn  // for deadlines
	r   io.Reader // reads after buf; nil: c
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.buf) > 0 {
		n := copy(b, p.buf)
		p.buf = p.buf[n:]
		return n, nil
	}
	return p.reader().Read(b)
}

func (p *prefixConn) reader() io.Reader {
	if p.r != nil {
		return p.r
	}
	return p.c
}

// forwardHTTP copies requests from src to dst one head at a time, asking
// routed(host) for each request after the first; a request for another route
// stops the copy with errMisdirected before any of it is written. After an
// Upgrade or CONNECT request it forwards nothing more until the backend's
// answer to it, which tr reports (tr nil: no answers are watched, as when
// fuzzing): 101 Switching Protocols (a 2xx to CONNECT) switches to copying
// raw bytes; any other answer keeps the connection in HTTP, and the next
// requests are checked like any other. It returns nil when the client closed
// its side cleanly between requests. Each request head after the first must
// arrive within idle.
func forwardHTTP(dst io.Writer, src *prefixConn, routed func(host string) bool, idle time.Duration, tr *responseTracker) error {
	br := getStreamReader(src)
	defer putStreamReader(br)
	if tr != nil {
		defer close(tr.reqs)
	}
	first := true
	for {
		if !first {
			// The next request must come, whole, within idle.
			src.c.SetReadDeadline(time.Now().Add(idle))
		}
		head, err := readHead(br)
		if !first {
			src.c.SetReadDeadline(time.Time{})
		}
		if err != nil {
			if err == io.EOF && len(head) == 0 {
				return nil
			}
			return err
		}
		rh, err := parseHead(head)
		if err != nil {
			return err
		}
		if !first && !routed(rh.host) {
			return errMisdirected
		}
		first = false
		if tr != nil {
			// Queued before the head is written: its answer cannot come
			// before it is known.
			tr.reqs <- pendingRequest{method: rh.method, upgrade: rh.upgrade}
		}
		if _, err := dst.Write(head); err != nil {
			return err
		}
		switch {
		case rh.chunked:
			if err := copyChunked(dst, br); err != nil {
				return err
			}
		case rh.bodyLen > 0:
			if _, err := io.CopyN(dst, br, rh.bodyLen); err != nil {
				return err
			}
		}
		if !rh.upgrade {
			continue
		}
		if tr == nil {
			return copyRaw(dst, br, src)
		}
		// Nothing more goes to the backend until it answered: a request
		// pipelined behind a refused upgrade is checked, not tunnelled.
		if up, ok := <-tr.decided; ok && up {
			return copyRaw(dst, br, src)
		} else if !ok {
			return errBackendDone
		}
	}
}

// errBackendDone ends the request copy when the backend's side ended while
// an upgrade waited for its answer.
var errBackendDone = errors.New("proxy: backend closed before answering the upgrade")

// pendingRequest is a request forwarded to the backend, awaiting its answer.
type pendingRequest struct {
	method  string
	upgrade bool
}

// responseTracker pairs a routed HTTP connection's responses with its
// requests, in order, so the request side learns whether the backend
// accepted an Upgrade or CONNECT.
type responseTracker struct {
	reqs    chan pendingRequest // from forwardHTTP, closed when it ends
	decided chan bool           // one value per upgrade request: switched or not
}

func newResponseTracker() *responseTracker {
	// A client may pipeline up to cap(reqs) requests ahead of the
	// answers; more wait (TCP back-pressure), none are lost.
	return &responseTracker{reqs: make(chan pendingRequest, 64), decided: make(chan bool, 1)}
}

// forwardResponses copies the backend's responses from src to dst one at a
// time, framing each body as RFC 9112 section 6.3 says, until the
// connection switches protocols or a body runs to the close; from then on,
// and after anything it cannot frame, it copies raw bytes. It closes
// tr.decided when it returns (an upgrade still waiting is then refused).
func forwardResponses(dst io.Writer, src io.Reader, tr *responseTracker) error {
	defer close(tr.decided)
	br := getStreamReader(src)
	defer putStreamReader(br)
	// raw passes head on, then everything after it, unframed.
	raw := func(head []byte) error {
		if _, err := dst.Write(head); err != nil {
			return err
		}
		if err := flushBuffered(dst, br); err != nil {
			return err
		}
		_, err := io.Copy(dst, src)
		return err
	}
	var req pendingRequest
	answered := true // req has its final answer: the next head answers the next request
	for {
		head, err := readHead(br)
		switch {
		case err == io.EOF && len(head) == 0:
			return nil
		case err != nil && len(head) == 0:
			return err
		case err != nil:
			return raw(head) // not a response head we can read
		}
		if answered {
			r, ok := <-tr.reqs
			if !ok {
				return raw(head) // an answer to no request
			}
			req, answered = r, false
		}
		hr := getHeadReader(head)
		resp, err := http.ReadResponse(&hr.br, &http.Request{Method: req.method})
		putHeadReader(hr) // only resp's fields are used, never its Body
		if err != nil {
			return raw(head)
		}
		code := resp.StatusCode
		switch {
		case code == http.StatusSwitchingProtocols && req.upgrade && req.method != http.MethodConnect,
			req.method == http.MethodConnect && code/100 == 2:
			tr.decided <- true
			return raw(head)
		case code/100 == 1 && code != http.StatusSwitchingProtocols:
			// 100 Continue, 103 Early Hints: the final answer follows.
			if _, err := dst.Write(head); err != nil {
				return err
			}
			continue
		}
		answered = true
		if req.upgrade {
			tr.decided <- false
		}
		chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
		bodiless := req.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code/100 == 1
		if !bodiless && !chunked && resp.ContentLength < 0 {
			return raw(head) // delimited by the close: nothing follows it
		}
		if _, err := dst.Write(head); err != nil {
			return err
		}
		switch {
		case bodiless:
		case chunked:
			err = copyChunked(dst, br)
		default:
			_, err = io.CopyN(dst, br, resp.ContentLength)
		}
		if err != nil {
			return err
		}
	}
}

// streamReaders are the 16 KiB readers of the HTTP copies, one per
// direction of every routed HTTP connection while it lasts.
var streamReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

func getStreamReader(r io.Reader) *bufio.Reader {
	br := streamReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putStreamReader(br *bufio.Reader) {
	br.Reset(nil)
	streamReaders.Put(br)
}

// headReader reads one complete head with net/http's parsers.
type headReader struct {
	r  bytes.Reader
	br bufio.Reader
}

// headReaders: a zero bufio.Reader gets its 4 KiB buffer at the first Reset.
var headReaders = sync.Pool{New: func() any { return new(headReader) }}

func getHeadReader(head []byte) *headReader {
	hr := headReaders.Get().(*headReader)
	hr.r.Reset(head)
	hr.br.Reset(&hr.r)
	return hr
}

// putHeadReader returns hr once nothing parsed from it reads on: the
// request or response is used for its fields, never for its Body.
func putHeadReader(hr *headReader) {
	hr.r.Reset(nil)
	hr.br.Reset(&hr.r)
	headReaders.Put(hr)
}

// flushBuffered writes what br has buffered to dst.
func flushBuffered(dst io.Writer, br *bufio.Reader) error {
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := dst.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// copyRaw flushes what br and src buffered, then copies the connection itself
// (spliced when dst is a *net.TCPConn).
func copyRaw(dst io.Writer, br *bufio.Reader, src *prefixConn) error {
	if err := flushBuffered(dst, br); err != nil {
		return err
	}
	if len(src.buf) > 0 {
		if _, err := dst.Write(src.buf); err != nil {
			return err
		}
		src.buf = nil
	}
	_, err := io.Copy(dst, src.reader())
	return err
}

// readHead reads one request head, up to maxHeadBytes. Leading blank lines
// are kept (RFC 9112 allows a server to ignore them; net/http does).
func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	scanned := 0 // bytes of head searched for its end
	for {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if len(head) > maxHeadBytes {
			return head, reject(ReasonTooLarge, nil)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(head) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return head, err
		}
		if _, done := scanHeadFrom(head, scanned); done {
			return head, nil
		}
		scanned = len(head)
	}
}

// maxChunkLine bounds a chunk-size line with extensions.
const maxChunkLine = 4 << 10

// copyChunked copies one chunked body verbatim, trailers included. It is
// strict where backends are known to disagree (RFC 9112 section 7.1): a
// chunk size is hex digits only (no sign, prefix, or white space before
// it), white space may follow it only before an extension, and every line
// ends in CRLF, not a bare LF.
func copyChunked(dst io.Writer, br *bufio.Reader) error {
	readLine := func() ([]byte, error) {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
			return nil, errors.New("proxy: chunk line too long")
		}
		if err != nil {
			return line, err
		}
		if len(line) < 2 || line[len(line)-2] != '\r' {
			return nil, errors.New("proxy: chunked line not ended by CRLF")
		}
		return line, nil
	}
	for {
		line, err := readLine()
		if err != nil {
			return err
		}
		n, err := chunkSize(line[:len(line)-2])
		if err != nil {
			return err
		}
		if _, err := dst.Write(line); err != nil {
			return err
		}
		if n == 0 {
			for { // trailers up to the blank line
				line, err := readLine()
				if err != nil {
					return err
				}
				if _, err := dst.Write(line); err != nil {
					return err
				}
				if len(line) == 2 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(dst, br, int64(n)); err != nil {
			return err
		}
		line, err = readLine()
		if err != nil {
			return err
		}
		if len(line) != 2 {
			return errors.New("proxy: chunk not followed by CRLF")
		}
		if _, err := dst.Write(line); err != nil {
			return err
		}
	}
}

// chunkSize parses a chunk-size line without its CRLF:
// 1*HEXDIG [ BWS ";" chunk-ext ].
func chunkSize(line []byte) (uint64, error) {
	i := 0
	for i < len(line) && isHex(line[i]) {
		i++
	}
	digits := line[:i]
	rest := bytes.TrimLeft(line[i:], " \t")
	if len(digits) == 0 || len(digits) > 15 || (len(rest) > 0 && rest[0] != ';') || (len(rest) == 0 && i != len(line)) {
		return 0, fmt.Errorf("proxy: bad chunk size line %q", line)
	}
	if bytes.ContainsAny(rest, "\r\n\x00") {
		return 0, fmt.Errorf("proxy: bad chunk extension %q", rest)
	}
	n, err := strconv.ParseUint(string(digits), 16, 63)
	if err != nil {
		return 0, fmt.Errorf("proxy: bad chunk size %q", digits)
	}
	return n, nil
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}
