package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSNIRoutingEndToEnd(t *testing.T) {
	blog := newTLSBackend(t, "blog.example.com")
	wild := newTLSBackend(t, "example.com", "a.b.example.com")
	def := newTLSBackend(t, "default.test", "other.test")
	acme := newTLSBackend(t, "blog.example.com")
	var p Proxy
	must(t, p.AddSNIRoute("Blog.Example.COM.", &Pool{Backends: []string{blog.addr}}))
	must(t, p.AddSNIRoute("*.example.com", &Pool{Backends: []string{wild.addr}}))
	must(t, p.AddALPNRoute("blog.example.com", []string{"acme-tls/1"}, &Pool{Backends: []string{acme.addr}}))
	must(t, p.AddSNIRoute("", &Pool{Backends: []string{def.addr}}))
	addr := serve(t, &p)

	tests := []struct {
		sni   string
		alpn  []string
		want  *tlsBackend
		proto string
	}{
		{"blog.example.com", nil, blog, ""},
		{"BLOG.example.com", []string{"h2"}, blog, "h2"},
		{"blog.example.com", []string{"acme-tls/1"}, acme, "acme-tls/1"},
		{"www.example.com", nil, wild, ""},
		{"a.b.example.com", nil, wild, ""},
		{"other.test", nil, def, ""},
	}
	for _, tt := range tests {
		t.Run(tt.sni+strings.Join(tt.alpn, ","), func(t *testing.T) {
			got, err := dialTLS(t.Context(), addr, tt.sni, tt.want.roots, tt.alpn...)
			if err != nil {
				t.Fatal(err) // certificate verification fails if another backend answered
			}
			if want := tt.want.name + " " + tt.proto; got != want {
				t.Errorf("backend said %q, want %q", got, want)
			}
		})
	}
	if s := p.Stats(); s.Routed != uint64(len(tests)) {
		t.Errorf("Stats().Routed = %d, want %d", s.Routed, len(tests))
	}
}

// TestHelloKit sends hellos shaped by the kit; routable ones must reach the
// backend byte for byte, the others must be closed with the right reason
// within the peek deadline.
func TestHelloKit(t *testing.T) {
	pq := makeHello(t, &tls.Config{ServerName: "kit.test"})
	if len(pq) < 1500 {
		t.Fatalf("default Go hello is %d bytes; want a PQ-sized one (> 1500)", len(pq))
	}
	big := makeHello(t, &tls.Config{ServerName: "kit.test", NextProtos: bigALPN(100)}) // ~21 KB, several records
	noSNI := makeHello(t, &tls.Config{InsecureSkipVerify: true})
	hs := handshakeBytes(t, pq)

	const peekTimeout = 500 * time.Millisecond
	tests := []struct {
		name    string
		send    []byte
		segment int // write in segments of this size (0: at once)
		hold    bool
		want    Reason // ReasonUnknown: routed
		maxPeek int
	}{
		{name: "pq", send: pq},
		{name: "1-byte segments", send: pq, segment: 1},
		{name: "1-byte records", send: reRecord(hs, 1)},
		{name: "100-byte records in 7-byte segments", send: reRecord(hs, 100), segment: 7},
		{name: "21KB hello over records", send: big},
		{name: "0-RTT style trailing bytes", send: append(append([]byte{}, pq...), 0x17, 3, 3, 0, 2, 9, 9)},
		{name: "no SNI", send: noSNI, want: ReasonNoSNI},
		{name: "garbage", send: []byte("\x00\x01garbage\r\n\r\n"), want: ReasonNotTLS},
		{name: "SSH banner", send: []byte("SSH-2.0-OpenSSH_9.6\r\n"), want: ReasonNotTLS, hold: true},
		{name: "alert record", send: []byte{0x15, 3, 3, 0, 2, 2, 40}, want: ReasonNotTLS},
		{name: "not a ClientHello", send: []byte{0x16, 3, 1, 0, 4, 2, 0, 0, 0}, want: ReasonBadHello},
		{name: "broken hello body", send: reRecord(append([]byte{1, 0, 0, 8}, bytes.Repeat([]byte{0xff}, 8)...), 100), want: ReasonBadHello},
		{name: "oversized", send: big, maxPeek: 4096, want: ReasonTooLarge},
		{name: "huge length", send: []byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, want: ReasonTooLarge},
		{name: "slowloris", send: pq[:700], hold: true, want: ReasonTimeout},
		{name: "closed mid-hello", send: pq[:700], want: ReasonClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newRawBackend(t)
			p := &Proxy{PeekTimeout: peekTimeout, MaxPeekBytes: tt.maxPeek}
			rej := newRejects(p)
			must(t, p.AddSNIRoute("kit.test", &Pool{Backends: []string{be.addr}}))
			addr := serve(t, p)
			// Before the dial: the proxy may accept (and start its peek
			// deadline) before Dial returns here.
			start := time.Now()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.(*net.TCPConn).SetNoDelay(true)
			if tt.segment == 0 {
				c.Write(tt.send)
			} else {
				for b := tt.send; len(b) > 0; b = b[min(tt.segment, len(b)):] {
					if _, err := c.Write(b[:min(tt.segment, len(b))]); err != nil {
						break
					}
				}
			}
			if !tt.hold {
				c.(*net.TCPConn).CloseWrite()
			}
			if tt.want != ReasonUnknown {
				rej.want(t, tt.want, 5*time.Second)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadAll(c); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("client read: %v, want EOF or reset (closed by proxy)", err)
				}
				if tt.want == ReasonTimeout {
					if el := time.Since(start); el < peekTimeout || el > peekTimeout+4*time.Second { // slack for a loaded CI machine
						t.Errorf("closed after %v, want about %v", el, peekTimeout)
					}
				}
				return
			}
			select {
			case got := <-be.got:
				if !bytes.Equal(got, tt.send) {
					t.Errorf("backend got %d bytes, want the %d sent", len(got), len(tt.send))
				}
			case <-rej.c:
				t.Fatal("rejected")
			case <-time.After(5 * time.Second):
				t.Fatal("backend got nothing")
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCapturedHello(t *testing.T) {
	b, err := os.ReadFile("testdata/clienthello-go1.26-x25519mlkem768.bin")
	if err != nil {
		t.Fatal(err)
	}
	n, done, err := scanHello(b)
	if err != nil || !done || n != len(b) {
		t.Fatalf("scanHello = %d, %v, %v", n, done, err)
	}
	for cut := range len(b) { // every prefix is incomplete, never an error
		if _, done, err := scanHello(b[:cut]); done || err != nil {
			t.Fatalf("prefix %d: done=%v err=%v", cut, done, err)
		}
	}
	info, err := parseHello(t.Context(), nil, b)
	if err != nil || info.serverName != "blog.example.com" || strings.Join(info.alpn, ",") != "h2,http/1.1" {
		t.Errorf("parseHello = %+v, %v", info, err)
	}
}
