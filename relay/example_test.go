package relay_test

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"

	"github.com/hairpin-go/hairpin/relay"
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
