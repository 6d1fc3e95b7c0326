package proxy

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
	proxyproto "github.com/pires/go-proxyproto"
)

func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	k, err := GenerateTunnelKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// edgeAddrs are where a test edge listens for agents.
type edgeAddrs struct{ udp, tcp string }

func (a edgeAddrs) agentEdge(e *Edge) AgentEdge {
	return AgentEdge{Addr: a.udp, TCPAddr: a.tcp, PublicKey: e.PublicKey()}
}

// startEdge serves e's agent listeners on loopback.
func startEdge(t testing.TB, e *Edge) edgeAddrs {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveEdge(t, e, pc, l)
}

func serveEdge(t testing.TB, e *Edge, pc net.PacketConn, l net.Listener) edgeAddrs {
	t.Helper()
	addrs := edgeAddrs{udp: pc.LocalAddr().String(), tcp: l.Addr().String()}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.ServeQUIC(pc); err != ErrEdgeClosed {
			t.Errorf("ServeQUIC = %v, want ErrEdgeClosed", err)
		}
	})
	wg.Go(func() {
		if err := e.ServeTCP(l); err != ErrEdgeClosed {
			t.Errorf("ServeTCP = %v, want ErrEdgeClosed", err)
		}
	})
	t.Cleanup(func() { e.Close(); wg.Wait() })
	return addrs
}

// startAgent runs a until the test ends and waits until every edge granted
// its claims.
func startAgent(t testing.TB, a *Agent) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	t.Cleanup(func() {
		a.Close()
		if err := <-done; err != ErrAgentClosed {
			t.Errorf("Run = %v, want ErrAgentClosed", err)
		}
	})
	waitAgent(t, a, 20*time.Second, func(st []AgentEdgeStatus) bool {
		for _, s := range st {
			if !s.Connected {
				return false
			}
		}
		return true
	})
}

// waitAgent waits for a status satisfying ok, on the agent's change signal.
func waitAgent(t testing.TB, a *Agent, within time.Duration, ok func([]AgentEdgeStatus) bool) []AgentEdgeStatus {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ch := a.statusChanged()
		st := a.Status()
		if ok(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("agent status not reached within %v: %+v", within, st)
		}
	}
}

// edgePPBackend is a TLS server behind a PROXY v2 header: it writes its name
// and the client address the header carried.
type edgePPBackend struct {
	name  string
	addr  string
	roots *x509.CertPool
}

type edgeBufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *edgeBufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func newEdgePPBackend(t testing.TB, name string) *edgePPBackend {
	t.Helper()
	cert, roots := testCert(t, name)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	netcoretest.Serve(t, l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			return // health checks
		}
		tc := tls.Server(&edgeBufConn{c, br}, cfg)
		if tc.Handshake() != nil {
			return
		}
		io.WriteString(tc, name+" "+h.SourceAddr.String())
		tc.CloseWrite()
		io.Copy(io.Discard, tc)
	})
	return &edgePPBackend{name: name, addr: l.Addr().String(), roots: roots}
}

// dialTLSFrom is dialTLS that also returns the client's own address.
func dialTLSFrom(ctx context.Context, addr, name string, roots *x509.CertPool) (said, local string, err error) {
	d := tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), c.LocalAddr().String(), err
}

// httpBackend is a plain HTTP server answering its name and the client
// address it saw.
func newEdgeHTTPBackend(t testing.TB, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name+" "+r.Host)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(l) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return l.Addr().String()
}

// publicProxy serves the edge's routes on loopback.
func publicProxy(t testing.TB, e *Edge, more ...Route) (*Proxy, string) {
	t.Helper()
	p := &Proxy{}
	if err := p.SetRoutes(append(e.Routes(), more...)); err != nil {
		t.Fatal(err)
	}
	return p, serve(t, p)
}

// homeProxy serves the agent's listener with routes.
func homeProxy(t testing.TB, a *Agent, routes ...Route) *Proxy {
	t.Helper()
	p := &Proxy{}
	if err := p.SetRoutes(routes); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(a.Listener()) }()
	t.Cleanup(func() {
		p.Close()
		// The agent, closed first, closes its listener.
		if err := <-done; err != ErrServerClosed && !errors.Is(err, net.ErrClosed) {
			t.Errorf("home Serve = %v, want ErrServerClosed or net.ErrClosed", err)
		}
	})
	return p
}
