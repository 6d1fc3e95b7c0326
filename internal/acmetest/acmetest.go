// Package acmetest runs pebble, Let's Encrypt's ACME test CA, for tests, and
// obtains certificates from it with golang.org/x/crypto/acme, answering the
// HTTP-01 and TLS-ALPN-01 challenges with a [Responder] the test serves where
// the CA must reach it (behind a proxy, an edge, a NAT).
//
// pebble is built by the go command from the version go.mod's tool directive
// pins; where that is impossible (no module proxy, no cache) the test skips,
// or fails under HAIRPIN_LAB=required. The caller starts the process, so it
// can run in a network namespace.
//
// Typical usage:
//
//	bin := acmetest.Build(t)
//	p := acmetest.Prepare(t, acmetest.Config{API: "127.0.0.1:14000", Management: "127.0.0.1:15000",
//		HTTPPort: 80, TLSPort: 443, DNS: dnsAddr})
//	cmd := exec.Command(bin, p.Args...)
//	cmd.Env = p.Env
//	// start cmd; serve a Responder's HTTPHandler and TLSConfig for the names
//	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.APIRoots}}}
//	acmetest.WaitReady(t, hc, p.Directory())
//	cl := acmetest.Register(ctx, t, hc, p.Directory())
//	chain, key, err := acmetest.Issue(ctx, cl, r, "blog.test", acmetest.HTTP01)
package acmetest

import (
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

	"github.com/hairpin-go/hairpin/internal/interop"
	"golang.org/x/crypto/acme"
)

// The challenge types a [Responder] answers.
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
)

// Build returns the path of the pebble binary go.mod's tool directive pins,
// built (or found in the build cache) by `go tool -n pebble`.
func Build(t testing.TB) string {
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

// Config is what a test chooses of pebble's configuration.
type Config struct {
	// API and Management are pebble's listen addresses ("ip:port"; pebble
	// takes no listener and reports no port, so the port must be chosen).
	// The API's certificate is made for API's IP.
	API, Management string
	// HTTPPort and TLSPort are where its VA validates HTTP-01 and
	// TLS-ALPN-01, at the address the names resolve to.
	HTTPPort, TLSPort int
	// DNS is the address of the DNS server (over TCP) that resolves the
	// names for the VA.
	DNS string
}

// Pebble is a prepared pebble: the arguments and environment to run it
// with, and the pool that trusts its API's certificate.
type Pebble struct {
	Args     []string
	Env      []string
	APIRoots *x509.CertPool
	cfg      Config
}

// Directory returns the ACME directory URL.
func (p *Pebble) Directory() string { return "https://" + p.cfg.API + "/dir" }

// RootURL returns the URL of the root pebble generated at start.
func (p *Pebble) RootURL() string { return "https://" + p.cfg.Management + "/roots/0" }

// Prepare writes pebble's configuration and API certificate into a
// temporary directory of t.
func Prepare(t testing.TB, cfg Config) *Pebble {
	t.Helper()
	host, _, err := net.SplitHostPort(cfg.API)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		t.Fatalf("acmetest: API %q: want an IP address: %v", cfg.API, err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	roots := writeIPCert(t, ip, certFile, keyFile)
	b, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": cfg.API, "managementListenAddress": cfg.Management,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": cfg.HTTPPort, "tlsPort": cfg.TLSPort,
		// The clients' shortest wait between polls of an authorization or order.
		"retryAfter": map[string]int{"authz": 1, "order": 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return &Pebble{
		Args: []string{"-config", cfgFile, "-dnsserver", cfg.DNS},
		// No random sleep before validations; every nonce accepted (the
		// default rejects 5% to exercise clients' retries).
		Env:      append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"),
		APIRoots: roots,
		cfg:      cfg,
	}
}

// writeIPCert writes a self-signed certificate for ip and its key.
func writeIPCert(t testing.TB, ip netip.Addr, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return pool
}

// WaitReady waits until url answers 200: pebble logs that it listens before
// it does, so the first answer is its only readiness signal.
func WaitReady(t testing.TB, hc *http.Client, url string) {
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
			t.Fatalf("acmetest: pebble at %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Root fetches a root certificate pebble serves at url.
func Root(t testing.TB, hc *http.Client, url string) *x509.Certificate {
	t.Helper()
	res, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("acmetest: GET %s: %v %s %q", url, err, res.Status, b)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("acmetest: GET %s: no PEM in %q", url, b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Connect waits for the started pebble p, registers a new account and
// fetches the root it issues under. dial, if not nil, is how the client
// reaches pebble (from a lab host).
func (p *Pebble) Connect(ctx context.Context, t testing.TB, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*acme.Client, *x509.Certificate) {
	t.Helper()
	tr := &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: p.APIRoots}}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	WaitReady(t, hc, p.Directory())
	return Register(ctx, t, hc, p.Directory()), Root(t, hc, p.RootURL())
}

// Register returns a client with a new account at the directory.
func Register(ctx context.Context, t testing.TB, hc *http.Client, directory string) *acme.Client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cl := &acme.Client{Key: key, DirectoryURL: directory, HTTPClient: hc}
	if _, err := cl.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("acmetest: register: %v", err)
	}
	return cl
}

// Responder answers ACME challenges: HTTP-01 as an http.Handler for plain
// HTTP, TLS-ALPN-01 with a tls.Config that serves only acme-tls/1 hellos. It
// counts the challenges it answered, by name. Safe for concurrent use.
type Responder struct {
	mu    sync.Mutex
	http  map[string]string           // path: key authorization
	alpn  map[string]*tls.Certificate // name: challenge certificate
	count map[string]int              // name+" "+type: answers
}

// NewResponder returns a Responder with no challenges yet.
func NewResponder() *Responder {
	return &Responder{http: map[string]string{}, alpn: map[string]*tls.Certificate{}, count: map[string]int{}}
}

// ServeHTTP answers GET /.well-known/acme-challenge/TOKEN for the challenges
// set, 404 for anything else.
func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	ka, ok := r.http[req.URL.Path]
	if ok {
		host := req.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		r.count[host+" "+HTTP01]++
	}
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	io.WriteString(w, ka)
}

// TLSConfig returns a server configuration that completes handshakes
// offering exactly acme-tls/1 for names with a challenge set, and refuses
// the rest.
func (r *Responder) TLSConfig() *tls.Config {
	return &tls.Config{
		NextProtos: []string{acme.ALPNProto},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if !slices.Equal(h.SupportedProtos, []string{acme.ALPNProto}) {
				return nil, fmt.Errorf("hello for %q offers %q, not only %s", h.ServerName, h.SupportedProtos, acme.ALPNProto)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			c := r.alpn[h.ServerName]
			if c == nil {
				return nil, fmt.Errorf("no challenge for %q", h.ServerName)
			}
			r.count[h.ServerName+" "+TLSALPN01]++
			return c, nil
		},
	}
}

// Serve serves r's HTTP-01 answers on hl and its TLS-ALPN-01 answers on tl
// until the test ends.
func (r *Responder) Serve(t testing.TB, hl, tl net.Listener) {
	hs := &http.Server{Handler: r}
	ts := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: r.TLSConfig()} // validations send nothing after the handshake
	var wg sync.WaitGroup
	wg.Go(func() { hs.Serve(hl) })
	wg.Go(func() { ts.ServeTLS(tl, "", "") })
	t.Cleanup(func() { hs.Close(); ts.Close(); wg.Wait() })
}

// Hits returns how many challenges of type typ r answered for name.
func (r *Responder) Hits(name, typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[name+" "+typ]
}

func (r *Responder) set(cl *acme.Client, ch *acme.Challenge, name string) error {
	switch ch.Type {
	case HTTP01:
		ka, err := cl.HTTP01ChallengeResponse(ch.Token)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.http[cl.HTTP01ChallengePath(ch.Token)] = ka
		r.mu.Unlock()
	case TLSALPN01:
		c, err := cl.TLSALPN01ChallengeCert(ch.Token, name)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.alpn[name] = &c
		r.mu.Unlock()
	default:
		return fmt.Errorf("acmetest: no responder for %s", ch.Type)
	}
	return nil
}

// authorize creates an order for name and answers its authorizations by
// challenge type typ, returning the order and the first authorization's
// failure.
func authorize(ctx context.Context, cl *acme.Client, r *Responder, name, typ string) (*acme.Order, error) {
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
		if err := r.set(cl, z.Challenges[i], name); err != nil {
			return o, err
		}
		if _, err := cl.Accept(ctx, z.Challenges[i]); err != nil {
			return o, fmt.Errorf("accept: %w", err)
		}
		if _, err := cl.WaitAuthorization(ctx, z.URI); err != nil {
			return o, err
		}
	}
	return o, nil
}

// Issue gets a certificate for name, proving control by challenge type typ
// answered by r, and returns the chain (leaf first) and the leaf's key.
func Issue(ctx context.Context, cl *acme.Client, r *Responder, name, typ string) ([][]byte, crypto.Signer, error) {
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
	// CreateCertFromOrder, not CreateOrderCert: pebble's finalize answer
	// has no Location, and the client needs the order's URL to poll it.
	chain, _, err := cl.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		return nil, nil, fmt.Errorf("finalize: %w", err)
	}
	return chain, key, nil
}

// Refused checks that an order for name, answered by HTTP-01, fails its
// authorization and ends invalid, and returns the CA's reason.
func Refused(ctx context.Context, cl *acme.Client, r *Responder, name string) (string, error) {
	o, err := authorize(ctx, cl, r, name, HTTP01)
	var ae *acme.AuthorizationError
	if !errors.As(err, &ae) {
		return "", fmt.Errorf("%s: authorization ended %v, want an authorization error", name, err)
	}
	_, err = cl.WaitOrder(ctx, o.URI)
	var oe *acme.OrderError
	if !errors.As(err, &oe) || oe.Status != acme.StatusInvalid {
		return "", fmt.Errorf("%s: order ended %v, want invalid (authorization: %v)", name, err, ae)
	}
	return ae.Error(), nil
}

// Verify checks that chain (leaf first) is valid for name under root and
// returns the leaf.
func Verify(chain [][]byte, name string, root *x509.Certificate) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("acmetest: empty chain")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		return nil, err
	}
	return leaf, nil
}
