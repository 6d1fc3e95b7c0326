package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/acmetest"
	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
	"github.com/hairpin-go/hairpin/proxy"
)

// TestEdgeACME is TestEdgeAndTunnelRoles with a certificate authority
// (pebble) validating through the edge, on loopback: the edge gateway
// listens publicly for TLS and plain HTTP, and the home gateway's proxy:
// routes send HTTP-01 requests (Host route) and acme-tls/1 hellos (an alpn:
// route) to an ACME responder and other TLS to the web server. Both names
// get certificates from pebble (HTTP-01 for one, TLS-ALPN-01 for the other)
// and a client of the edge, trusting only pebble's root, is served them.
func TestEdgeACME(t *testing.T) {
	bin := acmetest.Build(t)
	names := []string{"http01.example.com", "alpn.example.com"}
	edgeKey, edgePub := writeTunnelKey(t)
	homeKey, homePub := writeTunnelKey(t)

	edgeGW := startGateway(t, fmt.Sprintf(`edge:
  key: %s
  listen: ["127.0.0.1:0"]
  tls: ["127.0.0.1:0"]
  http: ["127.0.0.1:0"]
  allow: ["0.0.0.0/0", "::/0"]
  agents:
    - name: home
      key: %q
      names: [%q, %q]
`, edgeKey, proxy.FormatPublicKey(homePub), names[0], names[1]))
	ta, pa := edgeGW.tunnel.agentAddrs, edgeGW.tunnel.publicAddrs
	if len(ta) != 2 || len(pa) != 2 {
		t.Fatalf("edge listens on %v and %v", ta, pa)
	}
	tlsAddr, httpAddr := pa[0].(*net.TCPAddr), pa[1].(*net.TCPAddr) // edge.tls first

	r := acmetest.NewResponder()
	rhl, rtl := listenLoopback(t), listenLoopback(t)
	r.Serve(t, rhl, rtl)
	web, setCert := issuedWebServer(t)
	var routes string
	for _, n := range names {
		routes += fmt.Sprintf(`    - {host: %[1]q, http: [%[2]q], allow: ["0.0.0.0/0", "::/0"], healthCheck: {interval: "off"}}
    - {host: %[1]q, backends: [%[3]q], alpn: ["acme-tls/1"], allow: ["0.0.0.0/0", "::/0"], healthCheck: {interval: "off"}}
    - {host: %[1]q, backends: [%[4]q], allow: ["0.0.0.0/0", "::/0"], healthCheck: {interval: "off"}}
`, n, rhl.Addr(), rtl.Addr(), web)
	}
	homeGW := startGateway(t, fmt.Sprintf(`proxy:
  routes:
%stunnel:
  key: %s
  names: [%q, %q]
  edges:
    - addr: %q
      tcpAddr: %q
      key: %q
`, routes, homeKey, names[0], names[1], ta[0].String(), ta[1].String(), proxy.FormatPublicKey(edgePub)))
	// The agent's status has no change signal outside package proxy.
	deadline := time.Now().Add(20 * time.Second)
	for !homeGW.tunnel.agent.Status()[0].Connected {
		if time.Now().After(deadline) {
			t.Fatalf("tunnel not up: %+v", homeGW.tunnel.agent.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The internet's DNS sends the names to the edge; pebble validates on
	// the edge's public ports.
	recs := new(dnssplit.Records)
	for _, n := range names {
		if err := recs.AddString(n + ". 60 IN A 127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	dns := &dnssplit.Server{Views: []*dnssplit.View{{Name: "internet",
		Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: recs}}}
	dl := listenLoopback(t)
	var wg sync.WaitGroup
	wg.Go(func() { dns.Serve(dl) })
	t.Cleanup(func() { dns.Close(); wg.Wait() })
	// pebble binds ports it is given, so they are found free first; on a
	// loopback address of this test's own (127.0.0.0/8 all reaches lo), no
	// other test or process takes one in the meantime.
	own := ownLoopback(t)
	p := acmetest.Prepare(t, acmetest.Config{API: freePortOn(t, own), Management: freePortOn(t, own),
		HTTPPort: httpAddr.Port, TLSPort: tlsAddr.Port, DNS: dl.Addr().String()})
	cmd := exec.Command(bin, p.Args...)
	cmd.Env = p.Env
	proctest.Start(t, cmd)

	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	cl, root := p.Connect(ctx, t, nil)
	roots := x509.NewCertPool()
	roots.AddCert(root)

	for i, typ := range []string{acmetest.HTTP01, acmetest.TLSALPN01} {
		n := names[i]
		chain, key, err := acmetest.Issue(ctx, cl, r, n, typ)
		if err != nil {
			t.Fatalf("%s by %s: %v", n, typ, err)
		}
		leaf, err := acmetest.Verify(chain, n, root)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if r.Hits(n, typ) == 0 {
			t.Errorf("%s: valid, but the responder never answered a %s challenge", n, typ)
		}
		setCert(n, &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf})

		d := tls.Dialer{Config: &tls.Config{ServerName: n, RootCAs: roots}}
		c, err := d.DialContext(ctx, "tcp", tlsAddr.String())
		if err != nil {
			t.Fatalf("%s through the edge: %v", n, err)
		}
		if got := c.(*tls.Conn).ConnectionState().PeerCertificates[0]; !got.Equal(leaf) {
			t.Errorf("%s: the edge's client was served serial %v, want the issued %v", n, got.SerialNumber, leaf.SerialNumber)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		said, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(said) != n {
			t.Errorf("%s: web server said %q, %v", n, said, err)
		}
	}
	if s := edgeGW.tunnel.edge.Stats(); s.NoAgent != 0 {
		t.Errorf("edge stats %+v, want every connection carried", s)
	}
}

// ownLoopback returns a random address of 127.0.0.0/8 other than 127.0.0.1.
func ownLoopback(t *testing.T) netip.Addr {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[1:]); err != nil {
		t.Fatal(err)
	}
	b[0], b[3] = 127, 2+b[3]%253 // .2 to .254
	return netip.AddrFrom4(b)
}

// freePortOn returns addr with a port the kernel gave a listener just closed.
func freePortOn(t *testing.T, addr netip.Addr) string {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeTunnelKey writes a new tunnel key into a file of the test's own.
func writeTunnelKey(t *testing.T) (string, ed25519.PublicKey) {
	t.Helper()
	k, err := proxy.GenerateTunnelKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := proxy.MarshalTunnelKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return writeConfig(t, b), k.Public().(ed25519.PublicKey)
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// issuedWebServer serves HTTPS with the certificates set so far, writing
// the name each connection asked for and closing.
func issuedWebServer(t *testing.T) (string, func(string, *tls.Certificate)) {
	t.Helper()
	var mu sync.Mutex
	certs := map[string]*tls.Certificate{}
	l := tls.NewListener(listenLoopback(t), &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if c := certs[h.ServerName]; c != nil {
			return c, nil
		}
		return nil, fmt.Errorf("no certificate for %q yet", h.ServerName)
	}})
	netcoretest.Serve(t, l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := c.(*tls.Conn)
		if tc.Handshake() == nil {
			io.WriteString(c, tc.ConnectionState().ServerName)
		}
	})
	return l.Addr().String(), func(name string, c *tls.Certificate) {
		mu.Lock()
		certs[name] = c
		mu.Unlock()
	}
}
