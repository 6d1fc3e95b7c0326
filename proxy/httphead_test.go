package proxy

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// TestParseHeadRefusesAmbiguousFraming: heads a backend could read
// differently from the proxy are refused (before, the first two were
// forwarded as they were).
func TestParseHeadRefusesAmbiguousFraming(t *testing.T) {
	for _, head := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: public.test\r\nHost: admin.test\r\n\r\n",
	} {
		if _, err := parseHead([]byte(head)); ReasonOf(err) != ReasonBadRequest {
			t.Errorf("parseHead(%q) = %v, want bad request", head, err)
		}
	}
	if _, err := parseHead([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")); err != nil {
		t.Errorf("plain Content-Length refused: %v", err)
	}
}

// TestCopyChunkedStrict: chunk framing that backends read differently is
// refused before any of the offending line is forwarded (before, " 5", "5 ",
// bare-LF lines and a chunk followed by LF alone were passed on).
func TestCopyChunkedStrict(t *testing.T) {
	good := []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=1\r\nhello\r\n0\r\n\r\n",
		"5 ;ext\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
		"A\r\n0123456789\r\n0\r\n\r\n",
		"00000\r\n\r\n",
	}
	for _, body := range good {
		var out bytes.Buffer
		if err := copyChunked(&out, bufio.NewReader(strings.NewReader(body))); err != nil {
			t.Errorf("copyChunked(%q): %v", body, err)
		} else if out.String() != body {
			t.Errorf("copyChunked(%q) wrote %q", body, out.String())
		}
	}
	bad := []string{
		" 5\r\nhello\r\n0\r\n\r\n",     // white space before the size
		"5 \r\nhello\r\n0\r\n\r\n",     // white space without an extension
		"0x5\r\nhello\r\n0\r\n\r\n",    // prefix
		"+5\r\nhello\r\n0\r\n\r\n",     // sign
		"-1\r\n0\r\n\r\n",              // sign
		"5\nhello\r\n0\r\n\r\n",        // bare LF after the size
		"5\r\nhello\n0\r\n\r\n",        // bare LF after the data
		"5\r\nhelloXY0\r\n\r\n",        // no CRLF after the data
		"0\r\n\n",                      // bare LF ends the trailers
		"1000000000000000\r\n",         // 16 hex digits: beyond int64
		"\r\n",                         // no size
		"5\x00\r\nhello\r\n0\r\n\r\n",  // NUL after the size
		"5;a\rb\r\nhello\r\n0\r\n\r\n", // CR inside an extension
	}
	for _, body := range bad {
		var out bytes.Buffer
		if err := copyChunked(&out, bufio.NewReader(strings.NewReader(body))); err == nil {
			t.Errorf("copyChunked(%q) accepted it, wrote %q", body, out.String())
		}
	}
}

// TestParseHeadAbsoluteForm: an absolute-form target routes by its
// authority, and a Host line naming another host is refused.
func TestParseHeadAbsoluteForm(t *testing.T) {
	for _, tt := range []struct {
		head, host string
		ok         bool
	}{
		{"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", "a.test", true},
		{"GET http://a.test/ HTTP/1.1\r\nHost: A.TEST:80\r\n\r\n", "a.test", true},
		{"GET http://a.test:8080/ HTTP/1.1\r\n\r\n", "a.test", true},
		{"GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n", "", false},
		{"GET http://a.test/ HTTP/1.1\r\nHost: a.test.b.test\r\n\r\n", "", false},
		{"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n", "b.test", true},
	} {
		rh, err := parseHead([]byte(tt.head))
		if tt.ok && (err != nil || rh.host != tt.host) {
			t.Errorf("parseHead(%q) = %q, %v; want %q", tt.head, rh.host, err, tt.host)
		}
		if !tt.ok && ReasonOf(err) != ReasonBadRequest {
			t.Errorf("parseHead(%q) = %q, %v; want bad request", tt.head, rh.host, err)
		}
	}
}
