package proxy

import "testing"

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
