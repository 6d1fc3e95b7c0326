package proxy

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

// A client that trickles a large hello or request head one byte per read
// must not make the peek rescan everything it has read at every read: that
// is quadratic CPU (seconds per connection near MaxPeekBytes) for a few KB/s
// of sending.
func TestPeekTrickleIsLinear(t *testing.T) {
	hs := handshakeBytes(t, makeHello(t, &tls.Config{ServerName: "big.test", NextProtos: bigALPN(40)}))
	tests := []struct {
		name  string
		input []byte
		proto Protocol
	}{
		{"http head", []byte("GET / HTTP/1.1\r\nHost: big.test\r\nX-Pad: " + strings.Repeat("a", 60<<10) + "\r\n\r\n"), ProtocolHTTP},
		{"tls hello in 1-byte records", reRecord(hs, 1), ProtocolTLS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Proxy{PeekTimeout: time.Minute, MaxPeekBytes: len(tt.input) + 1}
			p.init()
			t.Cleanup(func() { p.Close() })
			c, s := net.Pipe()
			defer c.Close()
			defer s.Close()
			go func() {
				for i := range tt.input {
					if _, err := c.Write(tt.input[i : i+1]); err != nil {
						return
					}
				}
			}()
			begin := time.Now()
			res, err := p.peek(s, mustAP("192.0.2.1:1234"), tt.proto)
			took := time.Since(begin)
			if err != nil || res.hello.Protocol != tt.proto || res.hello.ServerName != "big.test" || len(res.buf) != len(tt.input) {
				t.Fatalf("peek: %v, hello %+v, %d bytes", err, res.hello, len(res.buf))
			}
			// Linear: well under a second even with -race on a loaded
			// machine; the quadratic scan took tens of seconds.
			if took > 5*time.Second {
				t.Fatalf("peek of %d bytes one at a time took %v", len(tt.input), took)
			}
			t.Logf("%d bytes in %v", len(tt.input), took)
		})
	}
}

// readHead (the heads after the first on a kept-alive connection) must not
// rescan the head at every line either.
func TestReadHeadManyLinesIsLinear(t *testing.T) {
	head := strings.Repeat("a\n", (maxHeadBytes-64)/2) + "\n"
	begin := time.Now()
	got, err := readHead(bufio.NewReaderSize(strings.NewReader(head), 16<<10))
	took := time.Since(begin)
	if err != nil || len(got) != len(head) {
		t.Fatalf("readHead: %d bytes, %v", len(got), err)
	}
	if took > 2*time.Second {
		t.Fatalf("readHead of %d one-byte lines took %v", len(head)/2, took)
	}
	t.Logf("%d lines in %v", len(head)/2, took)
}
