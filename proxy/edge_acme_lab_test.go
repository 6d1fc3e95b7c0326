package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/hairpin-go/hairpin/internal/acmetest"
	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
	"golang.org/x/crypto/acme"
)

// TestLabEdgeACME issues certificates from a real ACME CA (pebble, on the
// internet's Peer host) to a home site behind a carrier-grade NAT with no
// port forward, whose only way in is the edge on the Server host. pebble
// resolves the test names through a dnssplit server answering the edge's
// address, and validates through the edge's public ports 80 and 443 like a
// public CA would. At home, the agent's Proxy sends plain HTTP and
// ALPN "acme-tls/1" hellos to an ACME responder on LAN2 and other TLS to a
// web server there; the responder's client is golang.org/x/crypto/acme.
//
//   - http01.test passes HTTP-01: pebble's GET /.well-known/acme-challenge/…
//     goes through the edge's Host route on port 80.
//   - alpn.test passes TLS-ALPN-01: pebble's hello offering only acme-tls/1
//     goes through the edge's SNI route on 443, and the home Proxy's ALPN
//     route sees the protocol the edge passed on untouched.
//   - stray.test, which the agent claims but the edge does not authorise,
//     fails: pebble's order becomes invalid and the responder, ready to
//     answer, never hears from pebble.
//
// Each issued chain must verify against pebble's root (from its management
// port), and openssl s_client and curl on the Peer host reach each name
// through the edge and verify the issued certificate served by the home web
// server: the edge never held a certificate or a key.
func TestLabEdgeACME(t *testing.T) {
	paths := interop.Need(t, "openssl", "curl")
	pebble := acmetest.Build(t)
	lab := natlab.New(t, natlab.Config{Kind: natlab.CarrierNAT})
	edgeHost := lab.Addr(natlab.Server).String()
	peer := lab.Addr(natlab.Peer).String()
	allowed := []string{"http01.test", "alpn.test"}
	const stray = "stray.test"

	// The internet's DNS: every test name points at the edge.
	recs := new(dnssplit.Records)
	for _, n := range append(slices.Clone(allowed), stray) {
		must(t, recs.AddString(n+". 60 IN A "+edgeHost))
	}
	dnsSrv := &dnssplit.Server{Views: []*dnssplit.View{{Name: "internet",
		Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: recs}}}
	dl, err := lab.Listen(natlab.Peer, "tcp4", peer+":0") // pebble's VA asks over TCP
	if err != nil {
		t.Fatal(err)
	}
	var dnsWG sync.WaitGroup
	dnsWG.Go(func() { dnsSrv.Serve(dl) })
	t.Cleanup(func() { dnsSrv.Close(); dnsWG.Wait() })

	// The edge: agent listeners, and the public Proxy on ports 80 and 443
	// of its address (the namespace is the lab's own), where pebble's VA
	// validates.
	e, ea, pub, homeKey := labEdge(t, lab, allowed)
	var pubWG sync.WaitGroup
	for _, l := range []struct {
		port  string
		proto Protocol
	}{{"80", ProtocolHTTP}, {"443", ProtocolTLS}} {
		ln, err := lab.Listen(natlab.Server, "tcp4", net.JoinHostPort(edgeHost, l.port))
		if err != nil {
			t.Fatal(err)
		}
		pubWG.Go(func() { pub.ServeProtocol(ln, l.proto) })
	}
	t.Cleanup(func() { pub.Close(); pubWG.Wait() })

	// Home: the responder and the web server on LAN2, the agent and its
	// Proxy on LAN1. The home Proxy routes stray.test as well: only the
	// edge stands between pebble and a right answer.
	dialLAN1 := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.Dial(ctx, natlab.LAN1, network, addr)
	}
	r := acmetest.NewResponder()
	lan2 := lab.Addr(natlab.LAN2).String()
	rhl, err := lab.Listen(natlab.LAN2, "tcp4", lan2+":0")
	if err != nil {
		t.Fatal(err)
	}
	rtl, err := lab.Listen(natlab.LAN2, "tcp4", lan2+":0")
	if err != nil {
		t.Fatal(err)
	}
	r.Serve(t, rhl, rtl)
	web := newIssuedWeb(t, lab)
	pool := func(addr string) *Pool {
		return &Pool{Backends: []string{addr}, DialContext: dialLAN1, HealthCheck: HealthCheck{Interval: -1}}
	}
	home := &Proxy{}
	claimed := append(slices.Clone(allowed), stray)
	for _, n := range claimed {
		must(t, home.AddHTTPHostRoute(n, pool(rhl.Addr().String())))
		must(t, home.AddALPNRoute(n, []string{acme.ALPNProto}, pool(rtl.Addr().String())))
		must(t, home.AddSNIRoute(n, pool(web.addr)))
	}
	a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: claimed,
		DialContext: dialLAN1,
		ListenPacket: func(network, addr string) (net.PacketConn, error) {
			return lab.ListenPacket(natlab.LAN1, network, addr)
		}}
	homeDone := make(chan error, 1)
	go func() { homeDone <- home.Serve(a.Listener()) }()
	t.Cleanup(func() { home.Close(); <-homeDone })
	startAgent(t, a)
	if st := a.Status(); len(st) != 1 || !slices.Equal(st[0].Refused, []string{stray}) {
		t.Fatalf("agent status %+v, want %s refused", st, stray)
	}

	// pebble on the Peer host.
	api := net.JoinHostPort(peer, "14000") // fixed: pebble takes no listener; the namespace is the lab's
	p := acmetest.Prepare(t, acmetest.Config{API: api, Management: net.JoinHostPort(peer, "15000"),
		HTTPPort: 80, TLSPort: 443, DNS: dl.Addr().String()})
	var pebbleOut bytes.Buffer // read after the process is waited for
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble:\n%s", pebbleOut.String())
		}
	})
	cmd := lab.Command(natlab.Peer, pebble, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout, cmd.Stderr = &pebbleOut, &pebbleOut
	must(t, lab.StartCmd(cmd))

	// The ACME client runs on LAN2 and reaches pebble out through the CGN.
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	cl, root := p.Connect(ctx, t, func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.Dial(ctx, natlab.LAN2, network, addr)
	})
	rootFile := filepath.Join(t.TempDir(), "pebble-root.pem")
	must(t, os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), 0o600))

	for _, tt := range []struct{ name, challenge string }{
		{"http01.test", acmetest.HTTP01},
		{"alpn.test", acmetest.TLSALPN01},
	} {
		chain, key, err := acmetest.Issue(ctx, cl, r, tt.name, tt.challenge)
		if err != nil {
			t.Fatalf("%s by %s: %v", tt.name, tt.challenge, err)
		}
		leaf, err := acmetest.Verify(chain, tt.name, root)
		if err != nil {
			t.Fatalf("%s: issued chain does not verify against pebble's root: %v", tt.name, err)
		}
		if n := r.Hits(tt.name, tt.challenge); n == 0 {
			t.Errorf("%s: valid, but the responder never answered a %s challenge", tt.name, tt.challenge)
		}
		web.set(tt.name, tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf})
	}

	// The name the edge refused: pebble cannot reach the responder, the
	// authorization and then the order are invalid.
	if why, err := acmetest.Refused(ctx, cl, r, stray); err != nil {
		t.Error(err)
	} else {
		t.Logf("%s: order invalid: %s", stray, why)
	}
	if n := r.Hits(stray, acmetest.HTTP01); n != 0 {
		t.Errorf("%s: the responder answered %d challenges through an edge that does not route the name", stray, n)
	}

	// Real clients on the internet, trusting only pebble's root, get the
	// issued certificates from home through the edge.
	port := "443"
	for _, n := range allowed {
		want := web.leaf(n)
		cctx, ccancel := context.WithTimeout(t.Context(), 20*time.Second)
		ossl := lab.CommandContext(cctx, natlab.Peer, paths["openssl"], "s_client", "-ign_eof", "-verify_return_error",
			"-connect", net.JoinHostPort(edgeHost, port), "-servername", n, "-verify_hostname", n, "-CAfile", rootFile)
		ossl.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: " + n + "\r\nConnection: close\r\n\r\n")
		out, err := ossl.Output()
		if err != nil {
			t.Errorf("openssl s_client %s: %v\n%s", n, err, out)
		} else if got := firstPEMCert(out); !bytes.Equal(got, want.Raw) {
			t.Errorf("openssl s_client %s: served a certificate other than the issued one:\n%s", n, out)
		} else if !bytes.Contains(out, []byte("\r\n\r\n"+n)) {
			t.Errorf("openssl s_client %s: answer %q, want the web server's %q", n, out, n)
		}
		curl := lab.CommandContext(cctx, natlab.Peer, paths["curl"], "-sS", "--max-time", "10",
			"--cacert", rootFile, "--resolve", n+":"+port+":"+edgeHost, "https://"+n+"/")
		out, err = curl.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != n {
			t.Errorf("curl %s: %v %q, want %q", n, err, out, n)
		}
		ccancel()
	}
}

// firstPEMCert returns the DER of the first certificate in out.
func firstPEMCert(out []byte) []byte {
	i := bytes.Index(out, []byte("-----BEGIN CERTIFICATE-----"))
	if i < 0 {
		return nil
	}
	blk, _ := pem.Decode(out[i:])
	if blk == nil {
		return nil
	}
	return blk.Bytes
}

// issuedWeb is the home web server: HTTPS on LAN2 with the certificates
// issued so far, answering each request with the name it was served under.
type issuedWeb struct {
	addr  string
	mu    sync.Mutex
	certs map[string]*tls.Certificate
}

func newIssuedWeb(t *testing.T, lab *natlab.Lab) *issuedWeb {
	t.Helper()
	w := &issuedWeb{certs: map[string]*tls.Certificate{}}
	l, err := lab.Listen(natlab.LAN2, "tcp4", lab.Addr(natlab.LAN2).String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = l.Addr().String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
			io.WriteString(rw, req.TLS.ServerName)
		}),
		TLSConfig: &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if c := w.certs[h.ServerName]; c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("no certificate for %q yet", h.ServerName)
		}},
	}
	var wg sync.WaitGroup
	wg.Go(func() { srv.ServeTLS(l, "", "") })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return w
}

func (w *issuedWeb) set(name string, c tls.Certificate) {
	w.mu.Lock()
	w.certs[name] = &c
	w.mu.Unlock()
}

func (w *issuedWeb) leaf(name string) *x509.Certificate {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.certs[name].Leaf
}
