package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/proxy"
	proxyproto "github.com/pires/go-proxyproto"
)

// TestEdgeAndTunnelRoles runs both roles of the gateway in one process
// from two configuration files: an edge (agent listener, one agent with
// its key and name, a public TLS listener) and a home gateway whose
// tunnel: section dials it and whose proxy: routes serve the streams. A
// client of the edge's public port reaches the home TLS backend (verifying
// its certificate: the edge never decrypts), and the backend sees the
// client's address in the PROXY v2 header the home proxy sends.
func TestEdgeAndTunnelRoles(t *testing.T) {
	edgeKey, edgePub := writeTunnelKey(t)
	homeKey, homePub := writeTunnelKey(t)

	// The home backend: TLS behind a required PROXY v2 header.
	cert, err := selfSigned([]string{"blog.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(&proxyproto.Listener{Listener: bl}, &tls.Config{Certificates: []tls.Certificate{cert}})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					io.WriteString(c, "blog "+c.RemoteAddr().String())
				}
			})
		}
	})
	t.Cleanup(func() { tl.Close(); wg.Wait() })

	edgeYAML := func(names string) string {
		return fmt.Sprintf(`edge:
  key: %s
  listen: ["127.0.0.1:0"]
  tls: ["127.0.0.1:0"]
  allow: ["0.0.0.0/0", "::/0"]
  agents:
    - name: home
      key: %q
      names: %s
`, edgeKey, proxy.FormatPublicKey(homePub), names)
	}
	edgeGW := startGateway(t, edgeYAML(`["blog.example.com"]`))
	ta := edgeGW.tunnel.agentAddrs
	if len(ta) != 2 || len(edgeGW.tunnel.publicAddrs) != 1 {
		t.Fatalf("edge listens on %v and %v", ta, edgeGW.tunnel.publicAddrs)
	}
	homeGW := startGateway(t, fmt.Sprintf(`proxy:
  routes:
    - host: blog.example.com
      backends: [%q]
      proxyProtocol: v2
      allow: ["0.0.0.0/0", "::/0"]
      healthCheck: {interval: "off"}
tunnel:
  key: %s
  names: ["blog.example.com"]
  edges:
    - addr: %q
      tcpAddr: %q
      key: %q
`, bl.Addr().String(), homeKey, ta[0].String(), ta[1].String(), proxy.FormatPublicKey(edgePub)))

	// The agent's status has no change signal outside package proxy.
	deadline := time.Now().Add(20 * time.Second)
	for !homeGW.tunnel.agent.Status()[0].Connected {
		if time.Now().After(deadline) {
			t.Fatalf("tunnel not up: %+v", homeGW.tunnel.agent.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := tls.Dialer{Config: &tls.Config{ServerName: "blog.example.com", RootCAs: roots}}
	c, err := d.DialContext(t.Context(), "tcp", edgeGW.tunnel.publicAddrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	said, err := bufio.NewReader(c).ReadString('\n')
	if err != io.EOF {
		t.Fatalf("read: %q, %v", said, err)
	}
	if want := "blog " + c.LocalAddr().String(); strings.TrimSpace(said) != want {
		t.Errorf("backend said %q, want %q", said, want)
	}
	if s := edgeGW.tunnel.edge.Stats(); s.Agents != 1 || s.StreamsTotal != 1 {
		t.Errorf("edge stats %+v, want 1 agent, 1 stream", s)
	}

	// A reload of edge.agents applies live: a new name gets its public
	// routes at once, and the agent's changed entry makes it reconnect.
	reloadEdge := func(names string) {
		t.Helper()
		next, err := config.Parse([]byte(edgeYAML(names)))
		if err != nil {
			t.Fatal(err)
		}
		restart, err := edgeGW.reload(next)
		if err != nil || len(restart) != 0 {
			t.Fatalf("reload: %v, restart %v, want none", err, restart)
		}
	}
	reloadEdge(`["blog.example.com", "www.example.com"]`)
	var hosts []string
	for _, r := range edgeGW.tunnel.public.Routes() {
		hosts = append(hosts, r.Host)
		if len(r.Allow) != 2 {
			t.Errorf("route %s allows %v after the reload, want edge.allow", r.Host, r.Allow)
		}
	}
	if !slices.Contains(hosts, "www.example.com") || !slices.Contains(hosts, "blog.example.com") {
		t.Errorf("public routes after the reload: %v", hosts)
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(edgeGW.tunnel.edge.Connected()) != 1 || !homeGW.tunnel.agent.Status()[0].Connected {
		if time.Now().After(deadline) {
			t.Fatalf("agent not back after the reload: %+v", homeGW.tunnel.agent.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Removing the agent's last name is a config error; dropping blog for
	// another name leaves blog unrouted.
	reloadEdge(`["www.example.com"]`)
	deadline = time.Now().Add(20 * time.Second)
	for {
		st := homeGW.tunnel.agent.Status()[0]
		if st.Connected && slices.Equal(st.Refused, []string{"blog.example.com"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent still holds blog after the reload: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
