package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// FuzzClientHello feeds bytes to the peek framing and the crypto/tls parse,
// fed one growing prefix at a time as the network delivers them.
func FuzzClientHello(f *testing.F) {
	pq := makeHello(f, &tls.Config{ServerName: "fuzz.example"})
	f.Add(pq)
	f.Add(reRecord(handshakeBytes(f, pq), 7))
	f.Add(makeHello(f, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "acme-tls/1"}}))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		prevDone := false
		var inc helloScan // fed the same growing prefixes, as peek does
		for _, cut := range []int{len(b) / 3, len(b) / 2, len(b)} {
			n, done, err := scanHello(b[:cut])
			if in, idone, ierr := inc.scan(b[:cut]); in != n || idone != done || (ierr == nil) != (err == nil) {
				t.Fatalf("incremental scan of %d bytes = %d %v %v, one-shot %d %v %v", cut, in, idone, ierr, n, done, err)
			}
			if err != nil {
				break
			}
			if done && (n <= 0 || n > cut) {
				t.Fatalf("scanHello(%d bytes) = %d, done", cut, n)
			}
			if prevDone && !done && err == nil {
				t.Fatal("more bytes made a complete hello incomplete")
			}
			prevDone = done
			if done {
				info, err := parseHello(context.Background(), nil, b[:n])
				if err == nil {
					NormalizeName(info.serverName)
				} else if ReasonOf(err) != ReasonBadHello {
					t.Fatalf("parseHello error %v has reason %v", err, ReasonOf(err))
				}
			}
		}
	})
}

// FuzzHTTPHead checks the head scanner, the parser and the Host normalizer.
func FuzzHTTPHead(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: blog.example.com\r\n\r\n"))
	f.Add([]byte("GET http://Bücher.example:80/x HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: [::1]:8080\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\nHost: x\n\n"))
	f.Add([]byte("CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		methodOK(b)
		n, done := scanHead(b)
		seen := 0 // fed growing prefixes, as peek does
		for _, cut := range []int{len(b) / 3, len(b) / 2, len(b)} {
			in, idone := scanHeadFrom(b[:cut], seen)
			if idone {
				if wn, _ := scanHead(b[:cut]); in != wn {
					t.Fatalf("incremental head end %d, one-shot %d", in, wn)
				}
				break
			}
			if cut == len(b) && done {
				t.Fatal("incremental scan missed the end of the head")
			}
			seen = cut
		}
		if !done {
			return
		}
		if n > len(b) {
			t.Fatalf("head length %d > %d", n, len(b))
		}
		rh, err := parseHead(b[:n])
		if err != nil {
			if r := ReasonOf(err); r != ReasonBadRequest && r != ReasonNoHost {
				t.Fatalf("reason %v", r)
			}
			return
		}
		if rh.bodyLen < 0 {
			t.Fatal("negative body length")
		}
		if _, err := netip.ParseAddr(rh.host); err != nil && rh.host != "" {
			if again, err := hostWithoutPort(rh.host); err != nil || again != rh.host {
				t.Fatalf("host %q not stable: %q, %v", rh.host, again, err)
			}
		}
	})
}

// FuzzProxyHeader checks inbound PROXY framing and decoding.
func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.168.1.2 10.0.0.1 5555 443\r\n\x16\x03\x01"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP6 ::1 ::1 1 2\r\n"))
	v2, _ := buildProxyHeader(ProxyProtocolV2, mustAP("192.0.2.1:1000"), mustAP("192.0.2.2:443"), "a.example", []string{"h2"}, make([]byte, 16))
	f.Add(v2)
	v2b, _ := buildProxyHeader(ProxyProtocolV2, mustAP("[2001:db8::1]:1000"), mustAP("192.0.2.2:443"), "", nil, nil)
	f.Add(v2b)
	ids := newUniqueIDs()
	f.Fuzz(func(t *testing.T, b []byte) {
		n, present, done, err := scanProxyHeader(b)
		if !present || !done || err != nil {
			return
		}
		if n > len(b) || n <= 0 {
			t.Fatalf("header length %d of %d", n, len(b))
		}
		h, src, _, err := parseProxyHeader(b[:n])
		if err != nil {
			return
		}
		ids.ours(h)
		if src.IsValid() && !src.Addr().IsValid() {
			t.Fatal("invalid source")
		}
	})
}

// FuzzForwardHTTP checks the kept-alive request forwarder: whatever the
// client sends, what reaches the backend is a prefix of it, byte for byte.
func FuzzForwardHTTP(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: b\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		src := &prefixConn{buf: in, c: eofConn{}}
		forwardHTTP(&out, src, func(h string) bool { return h != "b" }, time.Second, nil)
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("forwarded %q, not a prefix of %q", out.Bytes(), in)
		}
	})
}

// eofConn is a connection with nothing more to read.
type eofConn struct{ net.Conn }

func (eofConn) Read([]byte) (int, error)        { return 0, io.EOF }
func (eofConn) SetReadDeadline(time.Time) error { return nil }

// FuzzChunkSize checks the strict chunk-size parser: what it accepts starts
// with the hex digits it returns, and carries no CR, LF or NUL.
func FuzzChunkSize(f *testing.F) {
	for _, s := range []string{"5", "5;a=b", "5 ;a", "0x5", " 5", "5 ", "fffffffffffffff", "1000000000000000", "-1", ";"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		n, err := chunkSize(line)
		if err != nil {
			return
		}
		if bytes.ContainsAny(line, "\r\n\x00") {
			t.Fatalf("accepted %q", line)
		}
		i := 0
		for i < len(line) && isHex(line[i]) {
			i++
		}
		want, perr := strconv.ParseUint(string(line[:i]), 16, 64)
		if perr != nil || want != n {
			t.Fatalf("chunkSize(%q) = %d, digits say %d (%v)", line, n, want, perr)
		}
	})
}

// FuzzForwardResponses checks the response framer of routed HTTP
// connections: whatever the backend sends, what reaches the client is a
// prefix of it, byte for byte, and it ends. The first byte picks the
// requests the answers belong to.
func FuzzForwardResponses(f *testing.F) {
	f.Add([]byte("\x00HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("\x01HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"))
	f.Add([]byte("\x02HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nto the close"))
	f.Add([]byte("\x03HTTP/1.1 200 Connection Established\r\n\r\nraw"))
	f.Add([]byte("\x00HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		kinds := []pendingRequest{{method: "GET"}, {method: "HEAD"}, {method: "GET", upgrade: true}, {method: "CONNECT", upgrade: true}}
		tr := newResponseTracker()
		for i := range 4 {
			tr.reqs <- kinds[(int(in[0])>>(2*i))&3]
		}
		close(tr.reqs)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range tr.decided {
			}
		}()
		var out bytes.Buffer
		forwardResponses(&out, bytes.NewReader(in[1:]), tr)
		<-done
		if !bytes.HasPrefix(in[1:], out.Bytes()) {
			t.Fatalf("forwarded %q, not a prefix of %q", out.Bytes(), in[1:])
		}
	})
}
