package relay_test

import (
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"time"

	"github.com/hairpin-go/hairpin/relay"
	"github.com/pion/stun/v3"
)

func ExamplePeerPolicy() {
	p := relay.PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("192.168.1.30/32")}} // a co-located SFU
	for _, a := range []string{"8.8.8.8", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "192.168.1.30", "192.168.1.31"} {
		if why := p.Check(netip.MustParseAddr(a)); why != "" {
			fmt.Printf("%s: denied (%s)\n", a, why)
		} else {
			fmt.Printf("%s: allowed\n", a)
		}
	}
	// Output:
	// 8.8.8.8: allowed
	// ::ffff:127.0.0.1: denied (loopback)
	// 64:ff9b::a9fe:a9fe: denied (link-local)
	// 192.168.1.30: allowed
	// 192.168.1.31: denied (private)
}

func ExampleRESTPassword() {
	// The same password coturn's use-auth-secret expects for this username.
	fmt.Println(relay.RESTPassword("north", "1700000000:alice"))
	// Output: Cd/49soE35ICqcJF/bCTn8Z4OyE=
}

func ExampleCredentialsHandler() {
	h := &relay.CredentialsHandler{Secret: "north", URIs: []string{"turn:turn.example.com:3478"}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/credentials", nil))
	body := rec.Body.String()
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	fmt.Println(strings.Contains(body, `"urls":["turn:turn.example.com:3478"]`), strings.Contains(body, `"ttl":86400`))
	// Output:
	// 200 application/json
	// true true
}

func ExampleServer() {
	srv := &relay.Server{Realm: "example.com", Secrets: []string{"change-me"}}
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	go srv.ServePacket(pc) //nolint:errcheck // returns ErrServerClosed after Close

	// A web app hands out credentials; any TURN client (a browser) uses them.
	user, pass, _ := srv.Credentials("alice", time.Hour)
	fmt.Println(strings.HasSuffix(user, ":alice"), pass != "")

	// STUN Binding is answered on the same port.
	c, _ := net.Dial("udp", pc.LocalAddr().String())
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	_, _ = c.Write(req.Raw)
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(buf)
	res := &stun.Message{Raw: buf[:n]}
	fmt.Println(err == nil && res.Decode() == nil && res.Type == stun.BindingSuccess)

	_ = srv.Close()
	// Output:
	// true true
	// true
}
