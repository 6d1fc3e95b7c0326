package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// scriptedBackend serves connections: reads one request head, writes
// answer, then (echo) echoes what follows or reads to the end; got receives
// every byte the backend read.
func scriptedBackend(t *testing.T, answer string, echo bool) (addr string, got <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan string, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var seen bytes.Buffer
				br := bufio.NewReader(io.TeeReader(c, &seen))
				if _, err := http.ReadRequest(br); err != nil {
					return // the pool's health check: connect and close
				}
				io.WriteString(c, answer)
				if echo {
					io.Copy(c, br)
				} else {
					io.Copy(io.Discard, br)
				}
				ch <- seen.String()
			}()
		}
	}()
	return l.Addr().String(), ch
}

// TestHTTPUpgradeWaitsForAnswer: after an Upgrade or CONNECT request the
// proxy forwards nothing more until the backend answered it. A refused
// upgrade (any answer but 101; for CONNECT, anything but 2xx) keeps the
// connection in HTTP: a request pipelined behind it for another route gets
// 421 and never reaches the backend. Before, the proxy switched to raw
// bytes at the Upgrade request itself, and the pipelined request for
// admin.example.com reached public.example.com's backend.
func TestHTTPUpgradeWaitsForAnswer(t *testing.T) {
	const admin = "GET /admin HTTP/1.1\r\nHost: admin.example.com\r\n\r\n"
	for _, c := range []struct {
		name, req, answer string
		status            []int // the statuses the client reads before the 421
	}{
		{"websocket refused", "GET /ws HTTP/1.1\r\nHost: public.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope\n", []int{400}},
		{"upgrade answered 200 with a chunked body", "GET /ws HTTP/1.1\r\nHost: public.example.com\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", []int{200}},
		{"100 Continue, then refused", "POST /ws HTTP/1.1\r\nHost: public.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi",
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", []int{100, 401}},
		{"CONNECT refused", "CONNECT public.example.com:443 HTTP/1.1\r\nHost: public.example.com:443\r\n\r\n",
			"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", []int{407}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, got := scriptedBackend(t, c.answer, false)
			adminBackend := httpBackend(t, "admin")
			p := &Proxy{PeekTimeout: 2 * time.Second}
			must(t, p.AddHTTPHostRoute("public.example.com", &Pool{Backends: []string{addr}}))
			must(t, p.AddHTTPHostRoute("admin.example.com", &Pool{Backends: []string{hostport(adminBackend)}}))
			conn, err := net.Dial("tcp", serve(t, p))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(conn, c.req+admin); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			for _, want := range append(c.status, http.StatusMisdirectedRequest) {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("reading the answer with status %d: %v", want, err)
				}
				if want != 100 {
					io.Copy(io.Discard, resp.Body)
				}
				if resp.StatusCode != want {
					t.Fatalf("status %d, want %d", resp.StatusCode, want)
				}
			}
			if seen := <-got; seen != c.req {
				t.Errorf("the backend read %q, want only the first request %q", seen, c.req)
			}
		})
	}
}

// TestHTTPUpgradeAccepted: a 101 to an Upgrade, or a 200 to a CONNECT,
// switches the connection to raw bytes both ways.
func TestHTTPUpgradeAccepted(t *testing.T) {
	for _, c := range []struct{ name, req, answer string }{
		{"websocket", "GET /ws HTTP/1.1\r\nHost: public.example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"CONNECT", "CONNECT public.example.com:443 HTTP/1.1\r\nHost: public.example.com:443\r\n\r\n",
			"HTTP/1.1 200 Connection Established\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, got := scriptedBackend(t, c.answer, true)
			p := &Proxy{PeekTimeout: 2 * time.Second}
			must(t, p.AddHTTPHostRoute("public.example.com", &Pool{Backends: []string{addr}}))
			conn, err := net.Dial("tcp", serve(t, p))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, c.req)
			buf := make([]byte, len(c.answer))
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != c.answer {
				t.Fatalf("answer %q, %v", buf, err)
			}
			const raw = "\x81\x05hello not HTTP \r\n\r\n GET / HTTP/1.1\r\nHost: other\r\n\r\n"
			io.WriteString(conn, raw)
			echo := make([]byte, len(raw))
			if _, err := io.ReadFull(conn, echo); err != nil || string(echo) != raw {
				t.Fatalf("echo %q, %v", echo, err)
			}
			conn.(*net.TCPConn).CloseWrite()
			if seen := <-got; !strings.HasSuffix(seen, raw) || !strings.HasPrefix(seen, c.req) {
				t.Errorf("backend read %q", seen)
			}
		})
	}
}
