package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/relay"
)

func TestRelaySectionValid(t *testing.T) {
	f, err := Parse([]byte(`relay:
  listen: ["0.0.0.0:3478"]
  realm: example.com
  secret: "change-me"
  secrets: ["next"]
  users: {alice: "password"}
  public: "203.0.113.1"
  relayPorts: "49152-65535"
  allowPeers: ["192.168.1.30", "10.1.0.0/16"]
  denyPeers: []
  maxCredentialLifetime: 24h
  limits: {allocationsPerUser: 8, bandwidth: -1, lifetime: 5m, handshakeTimeout: 3s}
`))
	if err != nil {
		t.Fatal(err)
	}
	srv, setPublic, err := f.Relay.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.168.1.30/32"), netip.MustParsePrefix("10.1.0.0/16")}
	switch {
	case srv.Realm != "example.com",
		len(srv.Secrets) != 2 || srv.Secrets[0] != "change-me" || srv.Secrets[1] != "next",
		srv.Users["alice"] != "password",
		srv.Public != netip.MustParseAddr("203.0.113.1"),
		srv.RelayPorts != relay.PortRange{Min: 49152, Max: 65535},
		len(srv.Peers.Allow) != 2 || srv.Peers.Allow[0] != want[0] || srv.Peers.Allow[1] != want[1],
		srv.MaxCredentialLifetime != 24*time.Hour,
		srv.Limits.AllocationsPerUser != 8 || srv.Limits.Bandwidth != -1 || srv.Limits.Lifetime != 5*time.Minute,
		srv.Limits.HandshakeTimeout != 3*time.Second:
		t.Errorf("built %+v", srv)
	}
	setPublic(netip.MustParseAddr("198.51.100.9")) // fixed public: ignored
	if srv.PublicAddr() != netip.MustParseAddr("203.0.113.1") {
		t.Errorf("fixed public address was overwritten: %s", srv.PublicAddr())
	}
}

func TestRelayPublicPlaceholder(t *testing.T) {
	f, err := Parse([]byte("relay:\n  listen: [\"127.0.0.1:0\"]\n  secret: s\n  public: \"{public}\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, setPublic, err := f.Relay.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	if srv.PublicAddr().IsValid() {
		t.Errorf("public before probing: %s", srv.PublicAddr())
	}
	setPublic(netip.MustParseAddr("198.51.100.9"))
	if srv.PublicAddr() != netip.MustParseAddr("198.51.100.9") {
		t.Errorf("public after probing: %s", srv.PublicAddr())
	}
}

func TestRelaySectionErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"no credentials", "relay:\n  listen: [\"0.0.0.0:3478\"]\n", []string{"line 1", "relay", "needs secret"}},
		{"no listener", "relay:\n  secret: s\n", []string{"relay.listen", "at least one"}},
		{"bad listen", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\", \"nowhere\"]\n", []string{"line 3", "relay.listen[1]", `"nowhere"`}},
		{"bad public", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  public: router\n", []string{"line 4", "relay.public", `"router"`}},
		{"bad ports", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  relayPorts: 60000-50000\n", []string{"line 4", "relay.relayPorts"}},
		{"bad allow", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  allowPeers:\n    - 10.0.0.0/8\n    - lan\n", []string{"line 6", "relay.allowPeers[1]", `"lan"`}},
		{"bad deny", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  denyPeers: [\"1.2.3.4/40\"]\n", []string{"line 4", "relay.denyPeers[0]"}},
		{"empty secret in list", "relay:\n  listen: [\"0.0.0.0:3478\"]\n  secrets: [\"a\", \"\"]\n", []string{"line 3", "relay.secrets[1]"}},
		{"empty password", "relay:\n  listen: [\"0.0.0.0:3478\"]\n  users:\n    bob: \"\"\n", []string{"relay.users.bob"}},
		{"bad duration", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  limits:\n    lifetime: forever\n", []string{"line 5", "relay.limits.lifetime"}},
		{"lifetime above cap", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  limits:\n    lifetime: 2h\n", []string{"relay.limits.lifetime", "1h"}},
		{"negative limit", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  limits:\n    allocations: -5\n", []string{"line 5", "relay.limits.allocations"}},
		{"bad batch", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  readBatch: 100\n", []string{"line 4", "relay.readBatch"}},
		{"tls listen without tls", "relay:\n  secret: s\n  tlsListen: [\"0.0.0.0:5349\"]\n", []string{"relay.tlsListen", "relay.tls"}},
		{"unknown key", "relay:\n  secret: s\n  listen: [\"0.0.0.0:3478\"]\n  sekret: x\n", []string{"line 4", "sekret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestRelayExampleFile keeps examples/turnserver/turnserver.yaml valid.
func TestRelayExampleFile(t *testing.T) {
	f, err := Load("../../turnserver/turnserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Relay.Build(nil); err != nil {
		t.Fatal(err)
	}
}

// TestRelayBuildLoadsCertificate: Parse only checks the keys; Build (and so
// -check) reads the certificate and key, and names the key when it fails.
func TestRelayBuildLoadsCertificate(t *testing.T) {
	in := "relay:\n  listen: [\"127.0.0.1:3478\"]\n  tlsListen: [\"127.0.0.1:5349\"]\n  secret: s\n  tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n"
	f, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Relay.Build(nil)
	if err == nil || !strings.Contains(err.Error(), "config: line 5: relay.tls: ") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Build with a missing certificate: %v", err)
	}
}

func TestRelayURIs(t *testing.T) {
	base := "relay:\n  listen: [\"192.168.1.10:3478\"]\n  tlsListen: [\"192.168.1.10:5349\"]\n  secret: s\n  tls: {cert: c, key: k}\n"
	f, err := Parse([]byte(base + "  credentials:\n    listen: 127.0.0.1:8088\n    allow: [127.0.0.1]\n    hostname: turn.example.com\n    tlsPort: 443\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(f.Relay.URIs(netip.MustParseAddr("203.0.113.1")), " ")
	if want := "turn:turn.example.com:3478?transport=udp turn:turn.example.com:3478?transport=tcp turns:turn.example.com:443?transport=tcp"; got != want {
		t.Errorf("with a hostname: %s\nwant %s", got, want)
	}
	f, err = Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	got = strings.Join(f.Relay.URIs(netip.MustParseAddr("203.0.113.1")), " ")
	if want := "turn:203.0.113.1:3478?transport=udp turn:203.0.113.1:3478?transport=tcp"; got != want {
		t.Errorf("without a hostname: %s\nwant %s (no turns: to an IP address)", got, want)
	}
	if _, err := Parse([]byte(base + "  credentials:\n    listen: 127.0.0.1:8088\n")); err == nil || !strings.Contains(err.Error(), "relay.credentials.allow: missing") {
		t.Errorf("credentials without allow: %v", err)
	}
	// uris: a relay elsewhere (the edge's, sharing the secret) replaces ours.
	creds := "  credentials:\n    listen: 127.0.0.1:8088\n    allow: [\"127.0.0.0/8\"]\n    uris: [%s]\n"
	f, err = Parse([]byte(base + fmt.Sprintf(creds, `"turn:edge.example.net:3478?transport=udp", "turns:edge.example.net:443?transport=tcp", "turn:[2001:db8::7]"`)))
	if err != nil {
		t.Fatal(err)
	}
	got = strings.Join(f.Relay.URIs(netip.MustParseAddr("203.0.113.1")), " ")
	if want := "turn:edge.example.net:3478?transport=udp turns:edge.example.net:443?transport=tcp turn:[2001:db8::7]"; got != want {
		t.Errorf("with uris: %s\nwant %s", got, want)
	}
	for _, tt := range []struct{ uri, want string }{
		{"stun:edge.example.net", `relay.credentials.uris[0]: "stun:edge.example.net": want turn:host`},
		{"turn:edge.example.net:99999", `port "99999"`},
		{"turn:edge.example.net?transport=sctp", `unknown query "transport=sctp"`},
		{"turn:bad host", `host "bad host"`},
	} {
		_, err := Parse([]byte(base + fmt.Sprintf(creds, `"`+tt.uri+`"`)))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("uri %q: %v, want %q", tt.uri, err, tt.want)
		}
	}
}
