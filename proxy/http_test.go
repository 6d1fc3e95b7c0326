package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// httpBackend answers "<name> <method> <path> <body length>".
func httpBackend(t testing.TB, name string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.URL.Path, len(b))
	}))
	t.Cleanup(s.Close)
	return s
}

func hostport(s *httptest.Server) string { return s.Listener.Addr().String() }

func TestHTTPHostRouting(t *testing.T) {
	blog := httpBackend(t, "blog")
	api := httpBackend(t, "api")
	def := httpBackend(t, "default")
	p := &Proxy{PeekTimeout: 2 * time.Second}
	rej := newRejects(p)
	must(t, p.AddHTTPHostRoute("blog.example.com", &Pool{Backends: []string{hostport(blog)}}))
	must(t, p.AddHTTPHostRoute("*.api.example.com", &Pool{Backends: []string{hostport(api)}}))
	addr := serve(t, p)

	type exchange struct {
		req  string
		want string // response body, or "421"
	}
	tests := []struct {
		name string
		ex   []exchange
	}{
		{"host", []exchange{{"GET /a HTTP/1.1\r\nHost: blog.example.com\r\n\r\n", "blog GET /a 0"}}},
		{"host with port and case", []exchange{{"GET /a HTTP/1.1\r\nHost: BLOG.example.com:8080\r\n\r\n", "blog GET /a 0"}}},
		{"absolute-form", []exchange{{"GET http://v1.api.example.com/x HTTP/1.1\r\nHost: V1.api.example.com:80\r\n\r\n", "api GET /x 0"}}},
		{"keep-alive same route", []exchange{
			{"GET /1 HTTP/1.1\r\nHost: blog.example.com\r\n\r\n", "blog GET /1 0"},
			{"POST /2 HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: 5\r\n\r\nhello", "blog POST /2 5"},
			{"POST /3 HTTP/1.1\r\nHost: blog.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n", "blog POST /3 5"},
			{"GET /4 HTTP/1.1\r\nHost: blog.example.com\r\n\r\n", "blog GET /4 0"},
		}},
		{"keep-alive other route gets 421", []exchange{
			{"GET /1 HTTP/1.1\r\nHost: blog.example.com\r\n\r\n", "blog GET /1 0"},
			{"GET /2 HTTP/1.1\r\nHost: x.api.example.com\r\n\r\n", "421"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			for _, ex := range tt.ex {
				if _, err := io.WriteString(c, ex.req); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("%q: %v", ex.req, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := string(body)
				if resp.StatusCode == http.StatusMisdirectedRequest {
					got = "421"
				}
				if got != ex.want {
					t.Errorf("%q: got %q, want %q", ex.req, got, ex.want)
				}
			}
		})
	}

	// Requests nothing matches.
	for _, tt := range []struct {
		req    string
		want   Reason
		status int
	}{
		{"GET / HTTP/1.1\r\nHost: nope.test\r\n\r\n", ReasonNoRoute, 404},
		// The URL names a route, the Host another site of the backend (before,
		// forwarded as is: the backend served blog.example.com's site).
		{"GET http://v1.api.example.com/x HTTP/1.1\r\nHost: blog.example.com\r\n\r\n", ReasonBadRequest, 400},
		{"GET / HTTP/1.0\r\n\r\n", ReasonNoHost, 400},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ReasonNoHost, 400},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", ReasonBadRequest, 400},
		{"GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked, x\r\n\r\n", ReasonBadRequest, 400},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, tt.req)
		rej.want(t, tt.want, 5*time.Second)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != tt.status {
			t.Errorf("%q: response %v, %v; want status %d", tt.req, resp, err, tt.status)
		}
		c.Close()
	}

	// A default route takes the rest.
	must(t, p.AddHTTPHostRoute("", &Pool{Backends: []string{hostport(def)}}))
	resp, err := (&http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}}).Get("http://unknown.test/z")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "default GET /z 0" {
		t.Errorf("default route: %q", body)
	}
	if !strings.Contains(fmt.Sprint(p.Stats().Rejected), "no route") {
		t.Errorf("stats: %+v", p.Stats())
	}
}

func TestHTTPIdleKeepAlive(t *testing.T) {
	blog := httpBackend(t, "blog")
	p := &Proxy{HTTPIdleTimeout: 300 * time.Millisecond}
	must(t, p.AddHTTPHostRoute("blog.test", &Pool{Backends: []string{hostport(blog)}}))
	addr := serve(t, p)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog.test\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: bl") // and then nothing
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("got a response to half a request")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("idle keep-alive connection closed after %v, want about 300ms", el)
	}
}

// TestHTTPOneByteSegments sends requests starting with "P" (like a PROXY
// header) one byte at a time, from an untrusted and a trusted source.
func TestHTTPOneByteSegments(t *testing.T) {
	blog := httpBackend(t, "blog")
	for _, trust := range []bool{false, true} {
		p := &Proxy{}
		if trust {
			p.TrustProxyFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}
		must(t, p.AddHTTPHostRoute("blog.test", &Pool{Backends: []string{hostport(blog)}}))
		addr := serve(t, p)
		for _, req := range []string{
			"POST /p HTTP/1.1\r\nHost: blog.test\r\nContent-Length: 2\r\n\r\nhi",
			"PUT /q HTTP/1.1\r\nHost: blog.test\r\nContent-Length: 0\r\n\r\n",
			"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nGET /r HTTP/1.1\r\nHost: blog.test\r\n\r\n",
		} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).SetNoDelay(true)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			for i := range len(req) {
				if _, err := c.Write([]byte{req[i]}); err != nil {
					break
				}
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			wantOK := trust || !strings.HasPrefix(req, "PROXY")
			switch {
			case wantOK && (err != nil || resp.StatusCode != 200):
				t.Errorf("trust=%v %q: %v %v", trust, req[:10], resp, err)
			case !wantOK && err == nil:
				t.Errorf("trust=%v %q: got a response to a PROXY header from an untrusted source", trust, req[:10])
			}
		}
	}
}
