package config

import (
	"context"
	"net"
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

func TestRelayServe(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	f, err := Parse([]byte("relay:\n  listen: [\"" + addr + "\"]\n  secret: s\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := f.Relay.Build(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Relay.Serve(ctx, srv, time.Second) }()
	// A STUN Binding request answered proves the listener runs.
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte{0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	buf := make([]byte, 1500)
	var got bool
	for i := 0; i < 50 && !got; i++ {
		_, _ = c.Write(req)
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		got = err == nil && n >= 20 && buf[0] == 1 && buf[1] == 1
		if err != nil {
			time.Sleep(20 * time.Millisecond) // refused: not listening yet
		}
	}
	if !got {
		t.Error("no Binding success from the configured relay")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
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
