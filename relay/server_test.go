package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v5"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

var loopbackOnly = PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

// serve starts s on a loopback socket of the given transport and returns
// its address; Close runs at cleanup and Serve must then say ErrServerClosed.
func serve(t testing.TB, s *Server, transport string) string {
	t.Helper()
	errc := make(chan error, 1)
	var addr string
	switch transport {
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		go func() { errc <- s.ServePacket(pc) }()
	case "tcp", "tls":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		if transport == "tls" {
			go func() { errc <- s.ServeTLS(l) }()
		} else {
			go func() { errc <- s.Serve(l) }()
		}
	}
	t.Cleanup(func() {
		s.Close()
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return addr
}

func dialTransport(t testing.TB, transport, addr, user, pass string) *rawClient {
	t.Helper()
	if transport != "tls" {
		return dialRaw(t, transport, addr, user, pass)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, stream: true, user: user, pass: pass}
}

func selfSigned(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"relay.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

func TestDeniedPeers(t *testing.T) {
	peers := []string{"127.0.0.1", "0.0.0.0", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "10.0.0.1",
		"169.254.169.254", "fe80::1"}
	allow := PeerPolicy{Allow: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10"),
	}}
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			denying := &Server{Users: map[string]string{"alice": "pw"}}
			allowing := &Server{Users: map[string]string{"alice": "pw"}, Peers: allow}
			if transport == "tls" {
				denying.TLSConfig, allowing.TLSConfig = selfSigned(t), selfSigned(t)
			}
			deny := dialTransport(t, transport, serve(t, denying, transport), "alice", "pw")
			if code := deny.allocate(); code != 0 {
				t.Fatalf("allocate: %d", code)
			}
			permit := dialTransport(t, transport, serve(t, allowing, transport), "alice", "pw")
			if code := permit.allocate(); code != 0 {
				t.Fatalf("allocate: %d", code)
			}
			for i, p := range peers {
				peer := netip.AddrPortFrom(netip.MustParseAddr(p), 5000)
				if code := deny.permit(peer); code != 403 {
					t.Errorf("CreatePermission %s: got %d, want 403", p, code)
				}
				if code := deny.channelBind(0x4000+uint16(i), peer); code != 403 {
					t.Errorf("ChannelBind %s: got %d, want 403", p, code)
				}
				// After an explicit allow: accepted, or refused by the
				// engine for the address family, never 403.
				code := permit.permit(peer)
				if netip.MustParseAddr(p).Unmap().Is4() && code != 0 || code == 403 || code == 401 {
					t.Errorf("allowed CreatePermission %s: got %d", p, code)
				}
			}
			before := denying.Stats().PeerDenials
			deny.send(netip.MustParseAddrPort("127.0.0.1:9"), []byte("x"))
			deadline := time.Now().Add(2 * time.Second)
			for denying.Stats().PeerDenials == before && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := denying.Stats().PeerDenials; got != before+1 {
				t.Errorf("Send to loopback: denials %d, want %d", got, before+1)
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	now := time.Now()
	s := &Server{
		Realm:   "example.org",
		Users:   map[string]string{"alice": "pw"},
		Secrets: []string{"new-secret", "old-secret"},
	}
	addr := serve(t, s, "udp")
	rest := func(secret, user string, ttl time.Duration) (string, string) {
		return RESTCredentials(secret, user, now, ttl)
	}
	good, goodPass := rest("new-secret", "bob", time.Hour)
	old, oldPass := rest("old-secret", "bob", time.Hour)
	bare, barePass := rest("new-secret", "", time.Hour)
	expired, expiredPass := rest("new-secret", "bob", -time.Minute)
	long, longPass := rest("new-secret", "bob", 72*time.Hour)
	wrong, wrongPass := rest("wrong-secret", "bob", time.Hour)
	tests := []struct {
		name, user, pass string
		want             int
	}{
		{"static", "alice", "pw", 0},
		{"static wrong password", "alice", "nope", 401},
		{"unknown user", "mallory", "pw", 401},
		{"REST ts:user", good, goodPass, 0},
		{"REST rotated secret", old, oldPass, 0},
		{"REST ts only", bare, barePass, 0},
		{"REST wrong secret", wrong, wrongPass, 401},
		{"REST expired", expired, expiredPass, 401},
		{"REST lifetime above cap", long, longPass, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, "udp", addr, tt.user, tt.pass)
			if code := c.allocate(); code != tt.want {
				t.Errorf("allocate: got %d, want %d", code, tt.want)
			}
		})
	}
	if st := s.Stats(); st.AuthFailures != 5 {
		t.Errorf("AuthFailures = %d, want 5", st.AuthFailures)
	}
}

func TestRelayUDP(t *testing.T) {
	for _, transport := range []string{"udp", "udp-batch", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			s := &Server{Users: map[string]string{"alice": "pw"}, Peers: loopbackOnly}
			if transport == "udp-batch" {
				transport, s.ReadBatch = "udp", 8
			}
			c := dialTransport(t, transport, serve(t, s, transport), "alice", "pw")
			if code := c.allocate(); code != 0 {
				t.Fatalf("allocate: %d", code)
			}
			peer, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peerAddr := netcore.AddrPort(peer.LocalAddr())
			if code := c.permit(peerAddr); code != 0 {
				t.Fatalf("permit: %d", code)
			}
			c.send(peerAddr, []byte("hello peer"))
			buf := make([]byte, 1500)
			_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := peer.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "hello peer" {
				t.Fatalf("peer got %q, %v", buf[:n], err)
			}
			if netcore.AddrPort(from) != c.relayed {
				t.Errorf("peer saw %s, relayed address is %s", from, c.relayed)
			}
			if transport == "udp" {
				if _, err := peer.WriteTo([]byte("hello client"), from); err != nil {
					t.Fatal(err)
				}
				if b, err := c.readData(); err != nil || string(b) != "hello client" {
					t.Fatalf("client got %q, %v", b, err)
				}
			}
			if code := c.channelBind(0x4001, peerAddr); code != 0 {
				t.Fatalf("channel bind: %d", code)
			}
			c.channelData(0x4001, []byte("via channel"))
			n, _, err = peer.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "via channel" {
				t.Fatalf("peer got %q, %v", buf[:n], err)
			}
			st := s.Stats()
			if u := st.Users["alice"]; u.PacketsToPeer != 2 || u.Allocations != 1 || st.Allocations != 1 || st.RelayPortsInUse != 1 {
				t.Errorf("stats: %+v", st)
			}
		})
	}
}

func TestInProcessRelay(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Public: netip.MustParseAddr("203.0.113.7")}
	addr := serve(t, s, "udp")
	a := dialRaw(t, "udp", addr, "a", "pw")
	b := dialRaw(t, "udp", addr, "b", "pw")
	if a.allocate() != 0 || b.allocate() != 0 {
		t.Fatal("allocate failed")
	}
	if a.relayed.Addr() != s.Public || b.relayed.Addr() != s.Public {
		t.Fatalf("relayed %s %s, want public %s", a.relayed, b.relayed, s.Public)
	}
	if a.permit(b.relayed) != 0 || b.permit(a.relayed) != 0 {
		t.Fatal("permission to our own public address refused")
	}
	a.send(b.relayed, []byte("no hairpin needed"))
	got, err := b.readData()
	if err != nil || string(got) != "no hairpin needed" {
		t.Fatalf("b got %q, %v", got, err)
	}
	if s.Stats().InProcess == 0 {
		t.Error("InProcess counter did not move")
	}
	// Another port of our public address is not a relay: refused.
	before := s.Stats().PeerDenials
	a.send(netip.AddrPortFrom(s.Public, 443), []byte("to the router"))
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().PeerDenials == before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.Stats().PeerDenials == before {
		t.Error("packet to a non-relay port of the public address was not denied")
	}
	s.SetPublic(netip.MustParseAddr("203.0.113.8"))
	c := dialRaw(t, "udp", addr, "a", "pw")
	if c.allocate() != 0 || c.relayed.Addr() != netip.MustParseAddr("203.0.113.8") {
		t.Errorf("after SetPublic relayed %s", c.relayed)
	}
}

func TestLimits(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw", "b": "pw"}, Peers: loopbackOnly,
		Limits: Limits{AllocationsPerUser: 1, Allocations: 2, PermissionsPerAllocation: 2}}
	addr := serve(t, s, "udp")
	a1 := dialRaw(t, "udp", addr, "a", "pw")
	if code := a1.allocate(); code != 0 {
		t.Fatalf("first allocation: %d", code)
	}
	if code := dialRaw(t, "udp", addr, "a", "pw").allocate(); code != 486 {
		t.Errorf("second allocation of a: %d, want 486", code)
	}
	if code := dialRaw(t, "udp", addr, "b", "pw").allocate(); code != 0 {
		t.Errorf("allocation of b: %d", code)
	}
	if code := dialRaw(t, "udp", addr, "b", "pw").allocate(); code != 486 {
		t.Errorf("third allocation in total: %d, want 486", code)
	}
	p := func(port uint16) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0."+strconv.Itoa(int(port))), port)
	}
	if a1.permit(p(1)) != 0 || a1.permit(p(2)) != 0 || a1.permit(p(1)) != 0 {
		t.Fatal("permissions within the limit refused")
	}
	if code := a1.permit(p(3)); code != 508 {
		t.Errorf("third permission: %d, want 508", code)
	}
	if st := s.Stats(); st.QuotaRejections != 3 {
		t.Errorf("QuotaRejections = %d, want 3", st.QuotaRejections)
	}
}

func TestUnauthorizedBudget(t *testing.T) {
	s := &Server{Limits: Limits{UnauthorizedBurst: 3, UnauthorizedRate: 0.001}}
	c, err := net.Dial("udp", serve(t, s, "udp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 6 {
		m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport)
		if _, err := c.Write(m.Raw); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	buf := make([]byte, 1500)
	for {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			break
		}
		got++
	}
	if got != 3 {
		t.Errorf("got %d replies, want 3", got)
	}
	if st := s.Stats(); st.UnauthorizedDrops != 3 || st.Challenges != 3 {
		t.Errorf("stats %+v", st)
	}
	// STUN Binding is not rationed.
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := c.Write(m.Raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(buf)
	res := &stun.Message{Raw: buf[:n]}
	if err != nil || res.Decode() != nil || res.Type != stun.BindingSuccess {
		t.Errorf("binding: %v", err)
	}
}

func TestStreamConnLimits(t *testing.T) {
	s := &Server{Limits: Limits{HandshakeTimeout: 200 * time.Millisecond, ConnsPerSource: 2}}
	addr := serve(t, s, "tcp")
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	start := time.Now()
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && err != nil && !isReset(err) {
			t.Errorf("conn %d: %v, want closed by server", i, err)
		}
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("silent connections lived %v", time.Since(start))
	}
	if st := s.Stats(); st.ConnsRejected != 3 {
		t.Errorf("ConnsRejected = %d, want 3 (1 over cap, 2 silent)", st.ConnsRejected)
	}
}

// TestStreamConnUnauthenticatedIdle: a message that is not an
// authenticated request (a Binding, an unauthenticated Allocate, garbage)
// does not lift the handshake deadline, so a client without credentials
// cannot hold connections open; an authenticated client keeps its own.
func TestStreamConnUnauthenticatedIdle(t *testing.T) {
	// Long enough for an allocation on a loaded machine running -race.
	const timeout = 500 * time.Millisecond
	s := &Server{Users: map[string]string{"a": "pw"}, Limits: Limits{HandshakeTimeout: timeout}}
	addr := serve(t, s, "tcp")

	idle := dialRaw(t, "tcp", addr, "", "")
	if _, code := idle.do(stun.MethodBinding); code != 0 {
		t.Fatalf("binding: %d", code)
	}
	start := time.Now()
	_ = idle.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := idle.conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() || time.Since(start) > 2*time.Second {
		t.Errorf("idle unauthenticated connection lived %v (%v), want closed by server", time.Since(start), err)
	}

	authed := dialRaw(t, "tcp", addr, "a", "pw")
	if code := authed.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	time.Sleep(2 * timeout) // past the handshake deadline: the allocation's connection must stay
	if code := authed.permit(netip.MustParseAddrPort("198.51.100.1:5000")); code != 403 {
		t.Errorf("request after the handshake deadline: got %d, want 403 (documentation peer)", code)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

// TestShutdownEndsUDPAllocations: a UDP allocation lives on the listening
// UDP socket, which Shutdown closes at once, so it does not hold the drain:
// Shutdown returns nil long before its deadline, the relay port is freed,
// and a Serve call after Shutdown returns ErrServerClosed at once.
func TestShutdownEndsUDPAllocations(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw"}}
	c := dialRaw(t, "udp", serve(t, s, "udp"), "a", "pw")
	if c.allocate() != 0 {
		t.Fatal("allocate")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v, want nil (no allocation survives the UDP socket)", err)
	}
	if st := s.Stats(); st.Allocations != 0 || st.RelayPortsInUse != 0 {
		t.Errorf("after Shutdown: %d allocations, %d relay ports", st.Allocations, st.RelayPortsInUse)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServePacket(pc); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServePacket after Shutdown: %v, want ErrServerClosed", err)
	}
}

// TestShutdownDeadline: an allocation on a TCP connection outlives the
// closed listener; when ctx ends first, Shutdown says so and closes it.
func TestShutdownDeadline(t *testing.T) {
	s := &Server{Users: map[string]string{"a": "pw"}}
	c := dialRaw(t, "tcp", serve(t, s, "tcp"), "a", "pw")
	if c.allocate() != 0 {
		t.Fatal("allocate")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want deadline exceeded", err)
	}
	if s.Stats().RelayPortsInUse != 0 {
		t.Errorf("relay ports still in use after Shutdown")
	}
}

func TestZeroServerIsSTUNOnly(t *testing.T) {
	var s Server
	c := dialRaw(t, "udp", serve(t, &s, "udp"), "anyone", "pw")
	if code := c.allocate(); code != 401 {
		t.Errorf("allocate on zero Server: %d, want 401", code)
	}
}

// TestTCPAllocationConnect covers the RFC 6062 path: Connect to a denied
// peer is refused with 403; to an allowed one the relay dials it.
func TestTCPAllocationConnect(t *testing.T) {
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := peer.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	peerAddr := netcore.AddrPort(peer.Addr())
	for _, tt := range []struct {
		name   string
		policy PeerPolicy
		want   int
	}{
		{"denied", PeerPolicy{}, 403},
		{"allowed", loopbackOnly, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Users: map[string]string{"a": "pw"}, Peers: tt.policy}
			c := dialRaw(t, "tcp", serve(t, s, "tcp"), "a", "pw")
			if code := c.allocateTCP(); code != 0 {
				t.Fatalf("TCP allocate: %d", code)
			}
			if _, code := c.do(stun.MethodConnect, peerAttr(peerAddr)); code != tt.want {
				t.Fatalf("Connect: %d, want %d", code, tt.want)
			}
			if tt.want == 0 {
				pc, ok := <-accepted
				if !ok {
					t.Fatal("peer saw no connection")
				}
				defer pc.Close()
				// RFC 6062 §5.2: the relay dials from the relayed address.
				if got := netcore.AddrPort(pc.RemoteAddr()).Port(); got != c.relayed.Port() {
					t.Errorf("peer connection from port %d, relayed port is %d", got, c.relayed.Port())
				}
			}
		})
	}
}

func TestRelayIPv6(t *testing.T) {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	s := &Server{Users: map[string]string{"a": "pw"}, Peers: PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("::1/128")}}}
	errc := make(chan error, 1)
	go func() { errc <- s.ServePacket(pc) }()
	t.Cleanup(func() {
		s.Close()
		<-errc
	})
	c := dialRaw(t, "udp6", pc.LocalAddr().String(), "a", "pw")
	if code := c.allocate(); code != 0 {
		t.Fatalf("allocate: %d", code)
	}
	if c.relayed.Addr() != netip.IPv6Loopback() {
		t.Fatalf("relayed %s, want an address on ::1", c.relayed)
	}
	peer, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if code := c.permit(netip.MustParseAddrPort("[fd00::1]:9")); code != 403 {
		t.Errorf("ULA peer: %d, want 403", code)
	}
	if code := c.permit(netcore.AddrPort(peer.LocalAddr())); code != 0 {
		t.Fatalf("permit ::1: %d", code)
	}
	c.send(netcore.AddrPort(peer.LocalAddr()), []byte("v6"))
	buf := make([]byte, 100)
	_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "v6" || netcore.AddrPort(from) != c.relayed {
		t.Fatalf("peer got %q from %v: %v", buf[:n], from, err)
	}
}

// TestServeSurvivesEMFILE: running out of descriptors (which remote clients
// can cause) pauses accepting; it must not stop TCP serving.
func TestServeSurvivesEMFILE(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Users: map[string]string{"a": "pw"}}
	done := make(chan error, 1)
	fl := netcoretest.NewListener(l, 5)
	go func() { done <- s.Serve(fl) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 20)); err != nil {
		t.Errorf("no Binding answer after EMFILE: %v", err)
	}
	if n := fl.Failures.Load(); n != 5 {
		t.Errorf("%d EMFILE failures injected, want 5", n)
	}
}

// TestCloseCancelsPeerDials: an RFC 6062 Connect dials the peer inside the
// engine's read loop for up to 30 s; after Close no such dial may start or
// keep running, or that goroutine outlives the server.
func TestCloseCancelsPeerDials(t *testing.T) {
	peer, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	s := &Server{Peers: loopbackOnly}
	s.init()
	s.Close()
	g := &relayGen{s: s, bind: netip.MustParseAddr("127.0.0.1")}
	c, err := g.AllocateConn(turn.AllocateConnConfig{Network: "tcp4",
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, RemoteAddr: peer.Addr()})
	if err == nil {
		c.Close()
		t.Error("peer dial after Close succeeded")
	}
}

// TestTooLongCredentialLogged: a REST credential that expires after the cap
// is a deployment mistake (coturn accepts 30-day ones), so the refusal is
// logged at Info with the reason, at most once per 10 s however many
// clients try; other refusals stay at Debug.
func TestTooLongCredentialLogged(t *testing.T) {
	var buf lockedBuf
	s := &Server{Realm: "example.org", Secrets: []string{"s"},
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	addr := serve(t, s, "udp")
	long, longPass := RESTCredentials("s", "bob", time.Now(), 30*24*time.Hour)
	wrong, wrongPass := RESTCredentials("other", "bob", time.Now(), time.Hour)
	for range 3 {
		if code := dialRaw(t, "udp", addr, long, longPass).allocate(); code != 401 {
			t.Fatalf("a 30-day credential: %d, want 401", code)
		}
	}
	if code := dialRaw(t, "udp", addr, wrong, wrongPass).allocate(); code != 401 {
		t.Fatalf("a wrong secret: %d, want 401", code)
	}
	out := buf.String()
	if n := strings.Count(out, "REST credential refused: it expires after the cap"); n != 1 {
		t.Errorf("%d Info lines for three over-long credentials, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "level=INFO") || !strings.Contains(out, "username="+long) || !strings.Contains(out, "cap=") {
		t.Errorf("the line lacks level, username or cap:\n%s", out)
	}
	if strings.Contains(out, wrong) {
		t.Errorf("a wrong secret logged at Info:\n%s", out)
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
