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

// Pass TLS through by SNI: the client's TLS session ends at the backend,
// which holds the certificate (httptest's covers example.com).
func ExampleProxy_AddSNIRoute() {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the backend over %s", r.Proto)
	}))
	defer backend.Close()

	var p proxy.Proxy
	if err := p.AddSNIRoute("example.com", &proxy.Pool{Backends: []string{backend.Listener.Addr().String()}}); err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go p.Serve(l)
	defer p.Close()

	client := backend.Client() // trusts the backend's certificate, not the proxy's: there is none
	client.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
	}
	resp, err := client.Get("https://example.com/")
	if err != nil {
		panic(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	client.CloseIdleConnections()
	fmt.Println(string(b))
	fmt.Println("certificate for", resp.TLS.PeerCertificates[0].DNSNames)
	// Output:
	// hello from the backend over HTTP/1.1
	// certificate for [example.com *.example.com]
}
