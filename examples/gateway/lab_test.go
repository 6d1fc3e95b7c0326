package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/icecheck"
	"github.com/hairpin-go/hairpin/internal/natlab"
	"github.com/hairpin-go/hairpin/nat"
)

// labSTUN runs an RFC 5780 STUN server on the lab's Server host, ports 3478
// and 3479 of both its addresses, and returns the first address.
func labSTUN(t *testing.T, lab *natlab.Lab) netip.Addr {
	t.Helper()
	s1, s2 := lab.ServerAddrs()
	var socks []net.PacketConn
	for _, a := range []netip.AddrPort{
		netip.AddrPortFrom(s1, 3478), netip.AddrPortFrom(s1, 3479),
		netip.AddrPortFrom(s2, 3478), netip.AddrPortFrom(s2, 3479),
	} {
		pc, err := lab.ListenPacket(natlab.Server, "udp4", a.String())
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, pc)
	}
	stun := &nat.Server{}
	stunDone := make(chan error, 1)
	go func() { stunDone <- stun.ServeRFC5780(socks[0], socks[1], socks[2], socks[3]) }()
	t.Cleanup(func() {
		stun.Close()
		<-stunDone
	})
	return s1
}

// turnREST makes a TURN REST API credential the way coturn's
// use-auth-secret expects it, written here from the spec rather than with
// the relay's own code, so the test checks the relay against the format.
func turnREST(secret, user string, ttl time.Duration) (string, string) {
	name := strconv.FormatInt(time.Now().Add(ttl).Unix(), 10) + ":" + user
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(name))
	return name, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// backend is a TLS server in a lab host whose certificate names one host, so
// a client can tell which backend it reached.
func backend(t *testing.T, lab *natlab.Lab, host natlab.Host, addr, name string) {
	t.Helper()
	cert, err := selfSigned([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.Listen(host, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "backend %s saw %s\n", name, r.RemoteAddr)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 5 * time.Second,
		// The proxy's health checks connect and close: not worth a log line.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(l, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// certName dials addr from a lab host with SNI name and returns the name on
// the certificate that came back.
func certName(ctx context.Context, lab *natlab.Lab, from natlab.Host, addr, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := lab.Dial(ctx, from, "tcp4", addr)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err := c.HandshakeContext(ctx); err != nil {
		return "", err
	}
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("no certificate")
	}
	return certs[0].Subject.CommonName, nil
}

// TestLabGatewayBehindNonHairpinningRouter is the whole story: the gateway on
// a LAN server behind a router that does NOT hairpin, with port forwards for
// DNS, HTTPS and TURN. It probes the NAT with an RFC 5780 server on the
// internet, learns the public address, and then:
//   - a LAN client resolves blog.example.com through the gateway and reaches
//     the LAN backend through the proxy (the public address would not work
//     from inside: the test shows that too);
//   - an internet client resolves the same name through the forwarded port,
//     gets the probed public address, and reaches the same backend by name;
//     a second name on the same public port reaches a different backend;
//   - a WebRTC agent inside and one at another NATed site (symmetric, so no
//     direct path) connect through the gateway's relay.
func TestLabGatewayBehindNonHairpinningRouter(t *testing.T) {
	const relayLo, relayHi = 50000, 50007
	fw := []natlab.Forward{
		{Proto: "udp", Port: 53, To: natlab.LAN1},
		{Proto: "tcp", Port: 53, To: natlab.LAN1},
		{Proto: "tcp", Port: 443, To: natlab.LAN1},
		{Proto: "udp", Port: 3478, To: natlab.LAN1},
	}
	for p := uint16(relayLo); p <= relayHi; p++ {
		fw = append(fw, natlab.Forward{Proto: "udp", Port: p, To: natlab.LAN1})
	}
	// Idle UDP mappings live 8 s on this router (conntrack's UDP timeout),
	// so the gateway's background lifetime search ends within the test.
	const udpTimeout = 8 * time.Second
	lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted, Hairpin: false, SiteB: natlab.Symmetric,
		Forwards: fw, UDPTimeout: udpTimeout})
	bin := gatewayBin.Path(t)
	gwIP := lab.Addr(natlab.LAN1)
	backendIP := lab.Addr(natlab.LAN2)
	public := lab.PublicAddr()

	// An RFC 5780 STUN server on the internet side, for the gateway's probe.
	s1 := labSTUN(t, lab)

	// Two backends on the LAN, one name each.
	backend(t, lab, natlab.LAN2, netip.AddrPortFrom(backendIP, 443).String(), "blog.example.com")
	backend(t, lab, natlab.LAN2, netip.AddrPortFrom(backendIP, 8443).String(), "chat.example.com")

	const secret = "lab-secret"
	cfg := fmt.Sprintf(`nat:
  stun: ["%[1]s:3478"]
  interval: 1m
  lifetime: true
  lifetimeMax: 20s
dns:
  listen: ["%[2]s:53"]
  views:
    - name: inside
      networks: ["192.168.1.0/24"]
      records:
        - "blog.example.com. 60 IN A %[2]s"
        - "chat.example.com. 60 IN A %[2]s"
    - name: outside
      networks: ["0.0.0.0/0"]
      records:
        - "blog.example.com. 60 IN A {public}"
        - "chat.example.com. 60 IN A {public}"
proxy:
  tls: ["%[2]s:443"]
  routes:
    - host: blog.example.com
      backends: ["%[3]s:443"]
      allow: ["0.0.0.0/0"]
    - host: chat.example.com
      backends: ["%[3]s:8443"]
      allow: ["0.0.0.0/0"]
relay:
  listen: ["%[2]s:3478"]
  realm: example.com
  secret: %[4]s
  public: "{public}"
  relayAddress: "%[2]s"
  relayPorts: "%[5]d-%[6]d"
log:
  level: debug
`, s1, gwIP, backendIP, secret, relayLo, relayHi)
	path := writeConfig(t, []byte(cfg))
	p := proctest.Start(t, lab.CommandContext(t.Context(), natlab.LAN1, bin, "-config", path))
	p.WaitFor(t, 0, "gateway ready", 30*time.Second)
	out := p.Output()
	if !strings.Contains(out, "public="+public.String()) {
		t.Fatalf("the gateway did not learn the public address %s by probing:\n%s", public, out)
	}
	if !strings.Contains(out, "your router does not hairpin") {
		t.Errorf("the gateway did not tell the operator that the router does not hairpin:\n%s", out)
	}

	dig := func(from natlab.Host, server, name string) string {
		t.Helper()
		b, err := lab.CommandContext(t.Context(), from, "dig", "+short", "+time=2", "+tries=2", "@"+server, name).CombinedOutput()
		if err != nil {
			t.Fatalf("dig from %s: %v\n%s", from, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	ctx := t.Context()

	t.Run("LAN client: split DNS and the proxy", func(t *testing.T) {
		if got := dig(natlab.LAN2, gwIP.String(), "blog.example.com"); got != gwIP.String() {
			t.Fatalf("inside answer %q, want the gateway's LAN address %s", got, gwIP)
		}
		cn, err := certName(ctx, lab, natlab.LAN2, netip.AddrPortFrom(gwIP, 443).String(), "blog.example.com")
		if err != nil || cn != "blog.example.com" {
			t.Fatalf("LAN client through the proxy: %q, %v", cn, err)
		}
		// Without split DNS the LAN client would use the public address,
		// and this router does not hairpin.
		if _, err := certName(ctx, lab, natlab.LAN2, netip.AddrPortFrom(public, 443).String(), "blog.example.com"); err == nil {
			t.Error("the public address worked from inside: the router hairpins, so this test proves nothing")
		}
	})
	t.Run("internet client: forwarded ports, public address, two names on one port", func(t *testing.T) {
		if got := dig(natlab.Peer, public.String(), "blog.example.com"); got != public.String() {
			t.Fatalf("outside answer %q, want the probed public address %s", got, public)
		}
		for _, name := range []string{"blog.example.com", "chat.example.com"} {
			cn, err := certName(ctx, lab, natlab.Peer, netip.AddrPortFrom(public, 443).String(), name)
			if err != nil || cn != name {
				t.Errorf("internet client to %s: reached %q, %v", name, cn, err)
			}
		}
		// No open resolver: an internet client gets nothing it should not.
		b, _ := lab.CommandContext(ctx, natlab.Peer, "dig", "+time=2", "+tries=1", "@"+public.String(), "example.org").CombinedOutput()
		if !strings.Contains(string(b), "REFUSED") {
			t.Errorf("outside query for a foreign name was not refused:\n%s", b)
		}
	})
	t.Run("the operator is told how long UDP mappings live", func(t *testing.T) {
		i := p.WaitFor(t, 0, "UDP mappings expire after", 60*time.Second)
		line := strings.Split(p.Output(), "\n")[i-1]
		var secs int
		if j := strings.Index(line, "expire after ~"); j >= 0 {
			fmt.Sscanf(line[j+len("expire after ~"):], "%ds", &secs)
		}
		if got := time.Duration(secs) * time.Second; got < udpTimeout-3*time.Second || got > udpTimeout {
			t.Errorf("measured lifetime %v, the router's timeout is %v:\n%s", got, udpTimeout, line)
		}
	})
	t.Run("WebRTC agents inside and at another NATed site meet at the relay", func(t *testing.T) {
		u1, p1 := turnREST(secret, "inside", time.Hour)
		u2, p2 := turnREST(secret, "outside", time.Hour)
		res := icecheck.Relayed(t, lab,
			icecheck.Peer{Host: natlab.LAN2, TURN: netip.AddrPortFrom(gwIP, 3478).String(), Username: u1, Password: p1},
			icecheck.Peer{Host: natlab.SiteBLAN, TURN: netip.AddrPortFrom(public, 3478).String(), Username: u2, Password: p2})
		if res.LocalA != public.String() || res.LocalB != public.String() {
			t.Errorf("relay candidates %s and %s, want the public address %s", res.LocalA, res.LocalB, public)
		}
	})
}
