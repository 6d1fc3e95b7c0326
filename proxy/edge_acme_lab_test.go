package proxy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
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
	pebble := buildPebble(t)
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
	edgeKey, homeKey := testKey(t), testKey(t)
	e := &Edge{Key: edgeKey, Agents: []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: allowed}}}
	pc, err := lab.ListenPacket(natlab.Server, "udp4", edgeHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := lab.Listen(natlab.Server, "tcp4", edgeHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	ea := serveEdge(t, e, pc, al)
	pub := &Proxy{}
	must(t, pub.SetRoutes(e.Routes()))
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
	r := newACMEResponder(t, lab)
	web := newIssuedWeb(t, lab)
	pool := func(addr string) *Pool {
		return &Pool{Backends: []string{addr}, DialContext: dialLAN1, HealthCheck: HealthCheck{Interval: -1}}
	}
	home := &Proxy{}
	claimed := append(slices.Clone(allowed), stray)
	for _, n := range claimed {
		must(t, home.AddHTTPHostRoute(n, pool(r.httpAddr)))
		must(t, home.AddALPNRoute(n, []string{acme.ALPNProto}, pool(r.tlsAddr)))
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

	// pebble on the Peer host, its API under a certificate of ours.
	dir := t.TempDir()
	apiCert, apiRoots := ipCert(t, lab.Addr(natlab.Peer))
	certFile, keyFile := writePEM(t, apiCert)
	api := net.JoinHostPort(peer, "14000") // fixed: pebble takes no listener; the namespace is the lab's
	mgmt := net.JoinHostPort(peer, "15000")
	cfg, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": api, "managementListenAddress": mgmt,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": 80, "tlsPort": 443,
		"retryAfter": map[string]int{"authz": 1, "order": 1},
	}})
	must(t, err)
	cfgFile := filepath.Join(dir, "pebble.json")
	must(t, os.WriteFile(cfgFile, cfg, 0o600))
	var pebbleOut bytes.Buffer // read after the process is waited for
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble:\n%s", pebbleOut.String())
		}
	})
	cmd := lab.Command(natlab.Peer, pebble, "-config", cfgFile, "-dnsserver", dl.Addr().String())
	// No random sleep before validations; every nonce accepted (the
	// default rejects 5% to exercise clients' retries).
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = &pebbleOut, &pebbleOut
	must(t, lab.StartCmd(cmd))

	// The ACME client runs on LAN2 and reaches pebble out through the CGN.
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.Dial(ctx, natlab.LAN2, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: apiRoots},
	}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	waitHTTPS(t, hc, "https://"+api+"/dir")
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	cl := &acme.Client{Key: accountKey, DirectoryURL: "https://" + api + "/dir", HTTPClient: hc}
	if _, err := cl.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("register: %v", err)
	}

	root := pebbleRoot(t, hc, "https://"+mgmt+"/roots/0")
	roots := x509.NewCertPool()
	roots.AddCert(root)
	rootFile := filepath.Join(dir, "pebble-root.pem")
	must(t, os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), 0o600))

	for _, tt := range []struct{ name, challenge string }{
		{"http01.test", "http-01"},
		{"alpn.test", "tls-alpn-01"},
	} {
		chain, key, err := issue(ctx, cl, r, tt.name, tt.challenge)
		if err != nil {
			t.Fatalf("%s by %s: %v", tt.name, tt.challenge, err)
		}
		leaf, err := x509.ParseCertificate(chain[0])
		must(t, err)
		inter := x509.NewCertPool()
		for _, der := range chain[1:] {
			c, err := x509.ParseCertificate(der)
			must(t, err)
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tt.name, Roots: roots, Intermediates: inter}); err != nil {
			t.Fatalf("%s: issued chain does not verify against pebble's root: %v", tt.name, err)
		}
		if n := r.hits(tt.name, tt.challenge); n == 0 {
			t.Errorf("%s: valid, but the responder never answered a %s challenge", tt.name, tt.challenge)
		}
		web.set(tt.name, tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf})
	}

	// The name the edge refused: pebble cannot reach the responder, the
	// authorization and then the order are invalid.
	if why, err := refusedOrder(ctx, cl, r, stray); err != nil {
		t.Error(err)
	} else {
		t.Logf("%s: order invalid: %s", stray, why)
	}
	if n := r.hits(stray, "http-01"); n != 0 {
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

// buildPebble returns the path of the pebble binary that go.mod's tool
// directive pins, built (or found in the build cache) by the go command.
func buildPebble(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		interop.Unavailable(t, "needs the go command to build pebble")
	}
	out, err := exec.Command(goBin, "tool", "-n", "pebble").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		interop.Unavailable(t, fmt.Sprintf("cannot build pebble (go tool -n pebble: %v %s)", err, stderr))
	}
	return strings.TrimSpace(string(out))
}

// waitHTTPS waits until url answers: pebble logs that it listens before it
// does, so the first answer is its only readiness signal.
func waitHTTPS(t *testing.T, hc *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := hc.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(res.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble at %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pebbleRoot fetches the root pebble generated at start.
func pebbleRoot(t *testing.T, hc *http.Client, url string) *x509.Certificate {
	t.Helper()
	res, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %s %q", url, err, res.Status, b)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("GET %s: no PEM in %q", url, b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
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

// ipCert returns a self-signed certificate for ip.
func ipCert(t *testing.T, ip netip.Addr) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: ip.String()},
		IPAddresses:           []net.IP{ip.AsSlice()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	leaf, err := x509.ParseCertificate(der)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// authorize creates an order for name and answers its authorizations by
// challenge type typ, returning the order and the first authorization's
// failure.
func authorize(ctx context.Context, cl *acme.Client, r *acmeResponder, name, typ string) (*acme.Order, error) {
	o, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		return nil, fmt.Errorf("new order: %w", err)
	}
	for _, u := range o.AuthzURLs {
		z, err := cl.GetAuthorization(ctx, u)
		if err != nil {
			return o, err
		}
		if z.Status == acme.StatusValid {
			continue
		}
		i := slices.IndexFunc(z.Challenges, func(c *acme.Challenge) bool { return c.Type == typ })
		if i < 0 {
			return o, fmt.Errorf("no %s challenge offered for %s", typ, name)
		}
		ch := z.Challenges[i]
		switch typ {
		case "http-01":
			ka, err := cl.HTTP01ChallengeResponse(ch.Token)
			if err != nil {
				return o, err
			}
			r.setHTTP(cl.HTTP01ChallengePath(ch.Token), ka)
		case "tls-alpn-01":
			c, err := cl.TLSALPN01ChallengeCert(ch.Token, name)
			if err != nil {
				return o, err
			}
			r.setALPN(name, c)
		}
		if _, err := cl.Accept(ctx, ch); err != nil {
			return o, fmt.Errorf("accept: %w", err)
		}
		if _, err := cl.WaitAuthorization(ctx, z.URI); err != nil {
			return o, err
		}
	}
	return o, nil
}

// issue gets a certificate for name, proving control with typ, and returns
// the chain (leaf first) and the leaf's key.
func issue(ctx context.Context, cl *acme.Client, r *acmeResponder, name, typ string) ([][]byte, crypto.Signer, error) {
	o, err := authorize(ctx, cl, r, name, typ)
	if err != nil {
		return nil, nil, err
	}
	if o, err = cl.WaitOrder(ctx, o.URI); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, key)
	if err != nil {
		return nil, nil, err
	}
	chain, _, err := cl.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		return nil, nil, fmt.Errorf("finalize: %w", err)
	}
	return chain, key, nil
}

// refusedOrder checks that an order for name, answered by HTTP-01, fails
// its authorization and ends invalid, and returns the CA's reason.
func refusedOrder(ctx context.Context, cl *acme.Client, r *acmeResponder, name string) (string, error) {
	o, err := authorize(ctx, cl, r, name, "http-01")
	var ae *acme.AuthorizationError
	if !errors.As(err, &ae) {
		return "", fmt.Errorf("%s: authorization through the edge ended %v, want an authorization error", name, err)
	}
	_, err = cl.WaitOrder(ctx, o.URI)
	var oe *acme.OrderError
	if !errors.As(err, &oe) || oe.Status != acme.StatusInvalid {
		return "", fmt.Errorf("%s: order ended %v, want invalid (authorization: %v)", name, err, ae)
	}
	return ae.Error(), nil
}

// acmeResponder answers ACME challenges at home: HTTP-01 on a plain HTTP
// listener and TLS-ALPN-01 on a TLS one that serves only acme-tls/1, both
// on LAN2. It counts the challenges it answered, by name.
type acmeResponder struct {
	httpAddr, tlsAddr string

	mu    sync.Mutex
	http  map[string]string           // path: key authorization
	alpn  map[string]*tls.Certificate // name: challenge certificate
	count map[string]int              // name+" "+type: answers
}

func newACMEResponder(t *testing.T, lab *natlab.Lab) *acmeResponder {
	t.Helper()
	r := &acmeResponder{http: map[string]string{}, alpn: map[string]*tls.Certificate{}, count: map[string]int{}}
	host := lab.Addr(natlab.LAN2).String()
	hl, err := lab.Listen(natlab.LAN2, "tcp4", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := lab.Listen(natlab.LAN2, "tcp4", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	r.httpAddr, r.tlsAddr = hl.Addr().String(), tl.Addr().String()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		ka, ok := r.http[req.URL.Path]
		if ok {
			r.count[hostOnly(req.Host)+" http-01"]++
		}
		r.mu.Unlock()
		if !ok {
			http.NotFound(w, req)
			return
		}
		io.WriteString(w, ka)
	})}
	ts := &http.Server{
		Handler: http.NotFoundHandler(), // a validation handshake sends nothing after it
		TLSConfig: &tls.Config{
			NextProtos: []string{acme.ALPNProto},
			GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if !slices.Equal(h.SupportedProtos, []string{acme.ALPNProto}) {
					return nil, fmt.Errorf("hello for %q offers %q, not only acme-tls/1", h.ServerName, h.SupportedProtos)
				}
				r.mu.Lock()
				defer r.mu.Unlock()
				c := r.alpn[h.ServerName]
				if c == nil {
					return nil, fmt.Errorf("no challenge for %q", h.ServerName)
				}
				r.count[h.ServerName+" tls-alpn-01"]++
				return c, nil
			},
		},
	}
	var wg sync.WaitGroup
	wg.Go(func() { hs.Serve(hl) })
	wg.Go(func() { ts.ServeTLS(tl, "", "") })
	t.Cleanup(func() { hs.Close(); ts.Close(); wg.Wait() })
	return r
}

func (r *acmeResponder) setHTTP(path, keyAuth string) {
	r.mu.Lock()
	r.http[path] = keyAuth
	r.mu.Unlock()
}

func (r *acmeResponder) setALPN(name string, c tls.Certificate) {
	r.mu.Lock()
	r.alpn[name] = &c
	r.mu.Unlock()
}

func (r *acmeResponder) hits(name, typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[name+" "+typ]
}

func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
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
