package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// TestCredentialsForEdgeRelay: behind a CGN the relay internet peers can
// reach runs at the edge, sharing relay.secret. The home gateway's
// credentials endpoint then hands out relay.credentials.uris, and the
// credentials it signs allocate on the edge's relay; an edge with another
// secret refuses them.
func TestCredentialsForEdgeRelay(t *testing.T) {
	edgeRelay := func(secret string) string {
		gw := startGateway(t, fmt.Sprintf("relay:\n  listen: [\"127.0.0.1:0\"]\n  secret: %q\n  realm: example.com\n", secret))
		return gw.relayAddrs[0].String()
	}
	edge, other := edgeRelay("shared-secret"), edgeRelay("another-secret")
	uris := []string{"turn:" + edge + "?transport=udp", "turn:" + other + "?transport=udp"}
	home := startGateway(t, fmt.Sprintf(`relay:
  listen: ["127.0.0.1:0"]
  secret: "shared-secret"
  realm: example.com
  credentials:
    listen: "127.0.0.1:0"
    allow: ["127.0.0.0/8"]
    uris: [%q, %q]
`, uris[0], uris[1]))

	resp, err := http.Get("http://" + home.creds.addr.String() + "/credentials")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ice struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ice); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /credentials: %d, %v", resp.StatusCode, err)
	}
	if !slices.Equal(ice.URLs, uris) {
		t.Fatalf("urls %v, want relay.credentials.uris %v", ice.URLs, uris)
	}
	allocate := func(server string) error {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server,
			Username: ice.Username, Password: ice.Credential, Conn: pc, RTO: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		relayed, err := c.Allocate()
		if err == nil {
			relayed.Close()
		}
		return err
	}
	if err := allocate(edge); err != nil {
		t.Errorf("the edge relay (same secret) refused the home's credentials: %v", err)
	}
	if err := allocate(other); err == nil {
		t.Error("a relay with another secret accepted the home's credentials")
	}
}
