package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
)

// The hello test kit: real ClientHellos made by crypto/tls clients, re-framed
// into records and segments as hostile or unusual clients send them.

// captureConn records what a TLS client writes and fails its first read,
// which ends the handshake right after the ClientHello.
type captureConn struct{ bytes.Buffer }

func (c *captureConn) Read([]byte) (int, error)         { return 0, errors.New("capture done") }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// makeHello returns the bytes a Go 1.26 TLS client sends first: by default
// with an X25519MLKEM768 key share, about 1.7 KB.
func makeHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	var c captureConn
	_ = tls.Client(&c, cfg).Handshake()
	if c.Len() == 0 {
		t.Fatal("no ClientHello captured")
	}
	return c.Bytes()
}

// bigALPN returns n ALPN protocol names of 200 bytes, padding a hello.
func bigALPN(n int) []string {
	var p []string
	for i := range n {
		p = append(p, strings.Repeat(string(rune('a'+i%26)), 200))
	}
	return p
}

// handshakeBytes strips the record headers from records.
func handshakeBytes(t testing.TB, records []byte) []byte {
	t.Helper()
	var hs []byte
	for len(records) > 0 {
		if len(records) < 5 {
			t.Fatal("short record")
		}
		l := int(records[3])<<8 | int(records[4])
		hs = append(hs, records[5:5+l]...)
		records = records[5+l:]
	}
	return hs
}

// reRecord frames handshake bytes into records of at most size bytes.
func reRecord(hs []byte, size int) []byte {
	var out []byte
	for len(hs) > 0 {
		n := min(size, len(hs))
		out = append(out, 0x16, 3, 1, byte(n>>8), byte(n))
		out = append(out, hs[:n]...)
		hs = hs[n:]
	}
	return out
}

// testCert makes a self-signed certificate for names.
func testCert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
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
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsBackend is a real TLS server on loopback that writes its name to each
// client after the handshake.
type tlsBackend struct {
	name  string
	addr  string
	roots *x509.CertPool
	l     net.Listener
	cfg   *tls.Config
	wg    sync.WaitGroup
	mu    sync.Mutex
	n     int
}

func newTLSBackend(t testing.TB, name string, more ...string) *tlsBackend {
	t.Helper()
	cert, roots := testCert(t, append([]string{name, "*." + name}, more...)...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBackend{name: name, addr: l.Addr().String(), roots: roots}
	b.cfg = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1", "acme-tls/1"}}
	b.start(l)
	t.Cleanup(b.stop)
	return b
}

// stop closes the listener and waits for its connections.
func (b *tlsBackend) stop() {
	b.mu.Lock()
	l := b.l
	b.mu.Unlock()
	l.Close()
	b.wg.Wait()
}

// restart listens on the same address again.
func (b *tlsBackend) restart(t testing.TB) {
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	b.start(l)
}

func (b *tlsBackend) start(l net.Listener) {
	b.mu.Lock()
	b.l = l
	b.mu.Unlock()
	cfg, name := b.cfg, b.name
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if tc.Handshake() != nil {
					return // health checks
				}
				b.mu.Lock()
				b.n++
				b.mu.Unlock()
				io.WriteString(tc, name+" "+tc.ConnectionState().NegotiatedProtocol)
				tc.CloseWrite()
				io.Copy(io.Discard, tc)
			}()
		}
	}()
}

func (b *tlsBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// rawBackend records everything a client sends until it closes.
type rawBackend struct {
	addr string
	got  chan []byte
}

func newRawBackend(t testing.TB) *rawBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{addr: l.Addr().String(), got: make(chan []byte, 100)}
	t.Cleanup(func() { close(b.got) }) // after Serve's own cleanup
	netcoretest.Serve(t, l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		data, _ := io.ReadAll(c)
		if len(data) > 0 { // health checks connect and close
			b.got <- data
		}
	})
	return b
}

// serve starts p on a loopback listener and returns its address.
func serve(t testing.TB, p *Proxy) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

// rejects collects OnReject reports.
type rejects struct {
	c chan Reason
}

func newRejects(p *Proxy) *rejects {
	r := &rejects{c: make(chan Reason, 100)}
	p.OnReject = func(h *Hello, reason Reason) { r.c <- reason }
	return r
}

func (r *rejects) want(t testing.TB, want Reason, within time.Duration) {
	t.Helper()
	select {
	case got := <-r.c:
		if got != want {
			t.Errorf("reject reason = %v, want %v", got, want)
		}
	case <-time.After(within):
		t.Errorf("no reject within %v, want %v", within, want)
	}
}

// dialTLS connects through addr with SNI name and returns what the backend said.
func dialTLS(ctx context.Context, addr, name string, roots *x509.CertPool, alpn ...string) (string, error) {
	d := tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots, NextProtos: alpn}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	return string(b), err
}

// dialTLSAny is dialTLS accepting any certificate for name.
func dialTLSAny(t testing.TB, addr, name string) (string, error) {
	d := tls.Dialer{Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}}
	c, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	return string(b), err
}

func newBytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func tlsClient(c net.Conn, name string, b *tlsBackend) *tls.Conn {
	return tls.Client(c, &tls.Config{ServerName: name, RootCAs: b.roots})
}
