package proxy

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
	proxyproto "github.com/pires/go-proxyproto"
)

// TestLabEdgeBehindCGN: the home site sits behind a carrier-grade NAT with
// no port forward at all (CarrierNAT: the CGN gives the line a port block,
// nothing inbound reaches it). The agent on LAN1 dials out to the edge on
// the Server host; two HTTPS backends on LAN2 hold their own certificates
// and require a PROXY v2 header. From the Peer host, real openssl s_client
// and curl reach both names through the edge's public port and verify the
// backends' certificates (the edge holds none: TLS is end to end), and each
// backend reports the Peer's address as the client. With UDP dropped at the
// home router the agent falls back to TLS over TCP and the same clients
// are served.
func TestLabEdgeBehindCGN(t *testing.T) {
	paths := interop.Need(t, "openssl", "curl")
	for _, udpBlocked := range []bool{false, true} {
		name := "quic"
		if udpBlocked {
			name = "udp-blocked"
		}
		t.Run(name, func(t *testing.T) {
			lab := natlab.New(t, natlab.Config{Kind: natlab.CarrierNAT})
			if udpBlocked {
				// The home router drops UDP it would forward, no ICMP.
				if out, err := lab.Command(natlab.Router, "nft", "add table inet edgetest; "+
					"add chain inet edgetest udpdrop { type filter hook forward priority -10; policy accept; }; "+
					"add rule inet edgetest udpdrop meta l4proto udp drop").CombinedOutput(); err != nil {
					t.Fatalf("nft: %v %s", err, out)
				}
			}
			names := []string{"blog.test", "wiki.test"}
			var caFiles []string
			home := &Proxy{}
			dialLAN1 := func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lab.Dial(ctx, natlab.LAN1, network, addr)
			}
			for _, n := range names {
				cert, _ := testCert(t, n)
				cf, _ := writePEM(t, cert)
				caFiles = append(caFiles, cf)
				ln, err := lab.Listen(natlab.LAN2, "tcp4", lab.Addr(natlab.LAN2).String()+":0")
				if err != nil {
					t.Fatal(err)
				}
				// REQUIRE by default: a connection without the header fails.
				pl := &proxyproto.Listener{Listener: ln}
				srv := &http.Server{
					Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						fmt.Fprintf(w, "%s %s\n", n, r.RemoteAddr)
					}),
					TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
				}
				var wg sync.WaitGroup
				wg.Go(func() { srv.ServeTLS(pl, "", "") })
				t.Cleanup(func() { srv.Close(); wg.Wait() })
				must(t, home.AddSNIRoute(n, &Pool{Backends: []string{ln.Addr().String()}, ProxyProtocol: ProxyProtocolV2,
					DialContext: dialLAN1, HealthCheck: HealthCheck{Interval: -1}}))
			}

			edgeHost := lab.Addr(natlab.Server).String()
			e, ea, pub, homeKey := labEdge(t, lab, names)
			pl, err := lab.Listen(natlab.Server, "tcp4", edgeHost+":0")
			if err != nil {
				t.Fatal(err)
			}
			pubAddr := pl.Addr().(*net.TCPAddr)
			done := make(chan error, 1)
			go func() { done <- pub.Serve(pl) }()
			t.Cleanup(func() { pub.Close(); <-done })

			a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: names, FallbackDelay: 500 * time.Millisecond,
				DialContext: dialLAN1,
				ListenPacket: func(network, addr string) (net.PacketConn, error) {
					return lab.ListenPacket(natlab.LAN1, network, addr)
				}}
			hdone := make(chan error, 1)
			go func() { hdone <- home.Serve(a.Listener()) }()
			t.Cleanup(func() { home.Close(); <-hdone })
			startAgent(t, a)

			want := TransportQUIC
			if udpBlocked {
				want = TransportTCP
			}
			st := e.Connected()
			if len(st) != 1 || st[0].Transport != want {
				t.Fatalf("edge sees %+v, want one agent over %v", st, want)
			}
			// The agent reaches the edge from the CGN's public address.
			if ap, err := netip.ParseAddrPort(st[0].Addr); err != nil || ap.Addr() != lab.PublicAddr() {
				t.Errorf("agent seen from %q, want the CGN's public address %v", st[0].Addr, lab.PublicAddr())
			}

			peer := lab.Addr(natlab.Peer).String()
			port := pubAddr.Port
			for i, n := range names {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				curl := lab.CommandContext(ctx, natlab.Peer, paths["curl"], "-sS", "--max-time", "10",
					"--cacert", caFiles[i], "--resolve", fmt.Sprintf("%s:%d:%s", n, port, edgeHost),
					fmt.Sprintf("https://%s:%d/", n, port))
				out, err := curl.CombinedOutput()
				checkSaid(t, "curl "+n, string(out), err, n, peer)

				ossl := lab.CommandContext(ctx, natlab.Peer, paths["openssl"], "s_client", "-quiet", "-verify_return_error",
					"-connect", fmt.Sprintf("%s:%d", edgeHost, port), "-servername", n, "-verify_hostname", n,
					"-CAfile", caFiles[i])
				ossl.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: " + n + "\r\nConnection: close\r\n\r\n")
				out, err = ossl.Output()
				body := string(out)
				if _, b, ok := strings.Cut(body, "\r\n\r\n"); ok {
					body = b
				}
				checkSaid(t, "openssl s_client "+n, body, err, n, peer)
				cancel()
			}
			if s := e.Stats(); s.StreamsTotal != 4 || s.NoAgent != 0 {
				t.Errorf("edge stats %+v, want 4 streams, none failed", s)
			}
		})
	}
}

// checkSaid checks a backend's "name client-address" answer: the right
// backend, and the client's address the PROXY header carried.
func checkSaid(t *testing.T, what, said string, err error, name, client string) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v: %q", what, err, said)
		return
	}
	gotName, addr, _ := strings.Cut(strings.TrimSpace(said), " ")
	ap, perr := netip.ParseAddrPort(addr)
	if gotName != name || perr != nil || ap.Addr().String() != client {
		t.Errorf("%s: backend said %q, want %s and the client %s", what, said, name, client)
	}
}

// labEdge serves an Edge on the lab's Server host (QUIC and TLS/TCP agent
// listeners on its address) that accepts agent "home", with homeKey, for
// names; pub is a public Proxy routed by the edge's routes, not serving yet.
func labEdge(t *testing.T, lab *natlab.Lab, names []string) (e *Edge, ea edgeAddrs, pub *Proxy, homeKey ed25519.PrivateKey) {
	t.Helper()
	edgeHost := lab.Addr(natlab.Server).String()
	homeKey = testKey(t)
	e = &Edge{Key: testKey(t), Agents: []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: names}}}
	pc, err := lab.ListenPacket(natlab.Server, "udp4", edgeHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := lab.Listen(natlab.Server, "tcp4", edgeHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	ea = serveEdge(t, e, pc, al)
	pub = &Proxy{}
	must(t, pub.SetRoutes(e.Routes()))
	return e, ea, pub, homeKey
}
