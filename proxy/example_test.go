package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/hairpin-go/hairpin/proxy"
)

// Route plain HTTP by Host to two backends behind one listener.
func Example() {
	blog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "blog")
	}))
	defer blog.Close()
	wiki := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "wiki")
	}))
	defer wiki.Close()

	var p proxy.Proxy
	p.AddHTTPHostRoute("blog.example.com", &proxy.Pool{Backends: []string{blog.Listener.Addr().String()}})
	p.AddHTTPHostRoute("*.wiki.example.com", &proxy.Pool{Backends: []string{wiki.Listener.Addr().String()}})
	// TLS is routed the same way by SNI, without being decrypted:
	//	p.AddSNIRoute("blog.example.com", &proxy.Pool{Backends: []string{"192.168.1.20:443"}})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go p.Serve(l)
	defer p.Shutdown(context.Background())

	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
		},
	}}
	for _, u := range []string{"http://blog.example.com/", "http://en.wiki.example.com/"} {
		resp, err := client.Get(u)
		if err != nil {
			panic(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(u, "->", string(b))
	}
	client.CloseIdleConnections()
	// Output:
	// http://blog.example.com/ -> blog
	// http://en.wiki.example.com/ -> wiki
}
