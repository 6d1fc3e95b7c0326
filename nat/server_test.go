package nat

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/hairpin-go/hairpin/internal/netcore"
	"github.com/hairpin-go/hairpin/internal/netcore/netcoretest"
)

func TestMain(m *testing.M) {
	if addrs := os.Getenv(serveEnv); addrs != "" {
		// Re-executed by a peer benchmark: be a server process, like coturn.
		os.Exit(serveForBenchmark(addrs))
	}
	leakcheck.Main(m)
}

// listenFour binds the four sockets of an RFC 5780 server on 127.0.0.1 and
// 127.0.0.2 (both are loopback on Linux), retrying until two port numbers are
// free on both IPs.
func listenFour(t testing.TB) [4]*net.UDPConn {
	t.Helper()
	ip1, ip2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	for range 50 {
		var pcs [4]*net.UDPConn
		ok := true
		pp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip1, 0)))
		if err != nil {
			t.Fatal(err)
		}
		pa, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip1, 0)))
		if err != nil {
			t.Fatal(err)
		}
		pcs[0], pcs[1] = pp, pa
		p1 := pp.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		p2 := pa.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		for i, port := range []uint16{p1, p2} {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip2, port)))
			if err != nil {
				ok = false
				break
			}
			pcs[2+i] = c
		}
		if ok {
			return pcs
		}
		for _, c := range pcs {
			if c != nil {
				c.Close()
			}
		}
	}
	t.Skip("could not find two ports free on 127.0.0.1 and 127.0.0.2")
	return [4]*net.UDPConn{}
}

// startServer runs an RFC 5780 server on loopback and returns it with its
// four addresses.
func startServer(t testing.TB, s *Server) [4]netip.AddrPort {
	t.Helper()
	pcs := listenFour(t)
	var addrs [4]netip.AddrPort
	for i, pc := range pcs {
		addrs[i] = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeRFC5780(pcs[0], pcs[1], pcs[2], pcs[3]) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("ServeRFC5780 returned %v, want ErrServerClosed", err)
		}
	})
	return addrs
}

// exchange sends raw to dst from a fresh socket and returns every datagram
// that arrives within wait, with its source.
func exchange(t *testing.T, dst netip.AddrPort, raw []byte, wait time.Duration) (*net.UDPConn, []datagram) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.WriteToUDPAddrPort(raw, dst); err != nil {
		t.Fatal(err)
	}
	return c, readAll(t, c, wait)
}

type datagram struct {
	from netip.AddrPort
	data []byte
}

func readAll(t *testing.T, c *net.UDPConn, wait time.Duration) []datagram {
	t.Helper()
	var got []datagram
	deadline := time.Now().Add(wait)
	for {
		c.SetReadDeadline(deadline)
		buf := make([]byte, 2048)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return got
		}
		got = append(got, datagram{netcore.Canonical(from), buf[:n]})
		// One answer is all a correct server sends; wait a little for extras.
		deadline = time.Now().Add(50 * time.Millisecond)
	}
}

func rawRequest(t testing.TB, attrs ...stun.RawAttribute) []byte {
	t.Helper()
	m := stun.Message{Type: stun.BindingRequest, TransactionID: stun.NewTransactionID()}
	m.WriteHeader()
	for _, a := range attrs {
		m.Add(a.Type, a.Value)
	}
	return m.Raw
}

func TestServerRFC5780(t *testing.T) {
	s := &Server{}
	addrs := startServer(t, s)
	port := func(p uint16, n int) []byte {
		v := make([]byte, n)
		binary.BigEndian.PutUint16(v, p)
		return v
	}
	tests := []struct {
		name      string
		to        int // socket index the request goes to
		attrs     []stun.RawAttribute
		wantVia   int // socket index expected as source; -1: no answer
		wantCode  int
		respPort  bool // answer goes to a second socket (RESPONSE-PORT)
		padding   int
		portBytes int
	}{
		{name: "plain", to: 0, wantVia: 0},
		{name: "alternate socket", to: 3, wantVia: 3},
		{name: "change ip and port", to: 0, attrs: []stun.RawAttribute{{Type: attrChangeRequest, Value: []byte{0, 0, 0, 6}}}, wantVia: 3},
		{name: "change port", to: 0, attrs: []stun.RawAttribute{{Type: attrChangeRequest, Value: []byte{0, 0, 0, 2}}}, wantVia: 1},
		{name: "change ip", to: 1, attrs: []stun.RawAttribute{{Type: attrChangeRequest, Value: []byte{0, 0, 0, 4}}}, wantVia: 3},
		{name: "change from alternate", to: 3, attrs: []stun.RawAttribute{{Type: attrChangeRequest, Value: []byte{0, 0, 0, 6}}}, wantVia: 0},
		{name: "bad change length", to: 0, attrs: []stun.RawAttribute{{Type: attrChangeRequest, Value: []byte{0, 6}}}, wantVia: 0, wantCode: 400},
		{name: "unknown required attribute", to: 0, attrs: []stun.RawAttribute{{Type: 0x7777, Value: []byte{1}}}, wantVia: 0, wantCode: 420},
		{name: "unknown optional attribute", to: 0, attrs: []stun.RawAttribute{{Type: 0xC777, Value: []byte{1}}}, wantVia: 0},
		{name: "padding", to: 0, attrs: []stun.RawAttribute{{Type: attrPadding, Value: make([]byte, 500)}}, wantVia: 0, padding: 500},
		{name: "response port 2 bytes", to: 0, respPort: true, portBytes: 2, wantVia: 0},
		{name: "response port 4 bytes", to: 0, respPort: true, portBytes: 4, wantVia: 0},
		{name: "response port with padding", to: 0, respPort: true, portBytes: 2,
			attrs: []stun.RawAttribute{{Type: attrPadding, Value: make([]byte, 100)}}, wantVia: 0, wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			attrs := tt.attrs
			var target *net.UDPConn
			if tt.respPort {
				var err error
				target, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				defer target.Close()
				p := uint16(target.LocalAddr().(*net.UDPAddr).Port)
				attrs = append(attrs, stun.RawAttribute{Type: attrResponsePort, Value: port(p, tt.portBytes)})
			}
			raw := rawRequest(t, attrs...)
			c, got := exchange(t, addrs[tt.to], raw, time.Second)
			if tt.respPort && tt.wantCode == 0 {
				if len(got) != 0 {
					t.Fatalf("RESPONSE-PORT answer went to the requesting socket")
				}
				got = readAll(t, target, time.Second)
			}
			if len(got) != 1 {
				t.Fatalf("got %d datagrams, want 1", len(got))
			}
			d := got[0]
			if d.from != addrs[tt.wantVia] {
				t.Errorf("answer from %v, want %v", d.from, addrs[tt.wantVia])
			}
			msg, err := parseMessage(d.data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !bytes.Equal(msg.txid[:], raw[8:20]) {
				t.Errorf("transaction ID not echoed")
			}
			if tt.wantCode != 0 {
				if msg.errorCode != tt.wantCode {
					t.Errorf("error code %d, want %d", msg.errorCode, tt.wantCode)
				}
				return
			}
			if !msg.success {
				t.Fatalf("not a success response (code %d)", msg.errorCode)
			}
			local := c.LocalAddr().(*net.UDPAddr).AddrPort()
			if msg.mapped != local {
				t.Errorf("mapped %v, want %v", msg.mapped, local)
			}
			if msg.origin != addrs[tt.wantVia] {
				t.Errorf("RESPONSE-ORIGIN %v, want %v", msg.origin, addrs[tt.wantVia])
			}
			if msg.other != addrs[tt.to^3] {
				t.Errorf("OTHER-ADDRESS %v, want %v", msg.other, addrs[tt.to^3])
			}
			if tt.padding > 0 {
				if len(d.data) > len(raw)+88 {
					t.Errorf("response %d bytes for a %d-byte request", len(d.data), len(raw))
				}
				if len(d.data) < tt.padding {
					t.Errorf("response %d bytes does not carry the %d-byte padding", len(d.data), tt.padding)
				}
			}
		})
	}
}

func TestServerIgnoresNonRequests(t *testing.T) {
	s := &Server{}
	addrs := startServer(t, s)
	resp := stun.Message{Type: stun.BindingSuccess, TransactionID: stun.NewTransactionID()}
	resp.WriteHeader()
	ind := stun.Message{Type: stun.NewType(stun.MethodBinding, stun.ClassIndication), TransactionID: stun.NewTransactionID()}
	ind.WriteHeader()
	alloc := stun.Message{Type: stun.NewType(stun.MethodAllocate, stun.ClassRequest), TransactionID: stun.NewTransactionID()}
	alloc.WriteHeader()
	for name, raw := range map[string][]byte{
		"response":   resp.Raw,
		"indication": ind.Raw,
		"allocate":   alloc.Raw,
		"garbage":    []byte("GET / HTTP/1.1\r\n\r\n"),
		"truncated":  rawRequest(t)[:12],
	} {
		t.Run(name, func(t *testing.T) {
			if _, got := exchange(t, addrs[0], raw, 200*time.Millisecond); len(got) != 0 {
				t.Errorf("server answered a %s", name)
			}
		})
	}
	if st := s.Stats(); st.Dropped < 5 {
		t.Errorf("Stats().Dropped = %d, want >= 5", st.Dropped)
	}
}

func TestServerPlainRefusesChangeRequest(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	done := make(chan error, 1)
	go func() { done <- s.ServePacket(pc) }()
	t.Cleanup(func() { s.Close(); <-done })
	dst := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	_, got := exchange(t, dst, rawRequest(t), time.Second)
	if len(got) != 1 {
		t.Fatalf("got %d answers", len(got))
	}
	msg, err := parseMessage(got[0].data)
	if err != nil || !msg.success || msg.other.IsValid() {
		t.Fatalf("plain answer: %+v, %v (want success without OTHER-ADDRESS)", msg, err)
	}
	_, got = exchange(t, dst, rawRequest(t, stun.RawAttribute{Type: attrChangeRequest, Value: []byte{0, 0, 0, 6}}), time.Second)
	if len(got) != 1 {
		t.Fatalf("got %d answers", len(got))
	}
	if msg, _ := parseMessage(got[0].data); msg.errorCode != 420 {
		t.Errorf("CHANGE-REQUEST to a plain server: code %d, want 420", msg.errorCode)
	}
}

func TestServerRateLimit(t *testing.T) {
	s := &Server{RateLimit: 5}
	addrs := startServer(t, s)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 20 {
		c.WriteToUDPAddrPort(rawRequest(t), addrs[0])
	}
	got := readAll(t, c, 500*time.Millisecond)
	// The window may roll over once during the burst.
	if len(got) < 5 || len(got) > 10 {
		t.Errorf("%d answers to 20 requests with RateLimit 5", len(got))
	}
	if s.Stats().RateLimited == 0 {
		t.Error("Stats().RateLimited is 0")
	}
}

func TestServerTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Two requests in one write: the framing must split them.
	r1, r2 := rawRequest(t), rawRequest(t)
	if _, err := c.Write(append(append([]byte{}, r1...), r2...)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for _, r := range [][]byte{r1, r2} {
		hdr := make([]byte, 20)
		if _, err := readFull(c, hdr); err != nil {
			t.Fatal(err)
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[2:4]))
		if _, err := readFull(c, body); err != nil {
			t.Fatal(err)
		}
		msg, err := parseMessage(append(hdr, body...))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg.txid[:], r[8:20]) || msg.mapped.String() != c.LocalAddr().String() {
			t.Errorf("TCP answer %+v for conn from %v", msg, c.LocalAddr())
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestServeRFC5780Validation(t *testing.T) {
	a, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	b, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer a.Close()
	defer b.Close()
	s := &Server{}
	if err := s.ServeRFC5780(a, b, a, b); err == nil {
		t.Fatal("ServeRFC5780 accepted sockets on one IP")
	}
	if err := s.ServeRFC5780(a, nil, a, b); err == nil {
		t.Fatal("ServeRFC5780 accepted a nil socket")
	}
}

func TestServerFingerprint(t *testing.T) {
	s := &Server{}
	addrs := startServer(t, s)
	m := stun.Message{Type: stun.BindingRequest, TransactionID: stun.NewTransactionID()}
	m.WriteHeader()
	if err := stun.Fingerprint.AddTo(&m); err != nil {
		t.Fatal(err)
	}
	good := append([]byte(nil), m.Raw...)
	_, got := exchange(t, addrs[0], good, time.Second)
	if len(got) != 1 {
		t.Fatalf("%d answers to a request with a good FINGERPRINT", len(got))
	}
	msg, err := parseMessage(got[0].data)
	if err != nil || !msg.success {
		t.Fatalf("answer %+v, %v", msg, err)
	}
	var resp stun.Message
	resp.Raw = got[0].data
	if resp.Decode() != nil || stun.Fingerprint.Check(&resp) != nil {
		t.Error("answer to a fingerprinted request lacks a valid FINGERPRINT")
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff
	if _, got := exchange(t, addrs[0], bad, 200*time.Millisecond); len(got) != 0 {
		t.Error("answered a request with a wrong FINGERPRINT")
	}
	if _, err := parseMessage(func() []byte { b := append([]byte(nil), got[0].data...); b[len(b)-1] ^= 1; return b }()); err == nil {
		t.Error("client accepted an answer with a wrong FINGERPRINT")
	}
}

// slowAddrConn is a PacketConn whose LocalAddr, which ServePacket calls once
// it has registered the socket, waits for release.
type slowAddrConn struct {
	net.PacketConn
	inside  chan struct{}
	release chan struct{}
}

func (c *slowAddrConn) LocalAddr() net.Addr {
	c.inside <- struct{}{}
	<-c.release
	return c.PacketConn.LocalAddr()
}

// TestCloseWaitsForServePacket: once ServePacket has taken the socket, Close
// must wait until that call returns, even if its readers have not started.
func TestCloseWaitsForServePacket(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &slowAddrConn{PacketConn: pc, inside: make(chan struct{}), release: make(chan struct{})}
	s := &Server{}
	served := make(chan error, 1)
	go func() { served <- s.ServePacket(c) }()
	<-c.inside
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Error("Close returned while ServePacket was still starting its readers")
	case <-time.After(100 * time.Millisecond):
	}
	close(c.release)
	<-closed
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServePacket: %v, want ErrServerClosed", err)
	}
}

// TestServerTCPConnsPerSource: one source IP cannot hold more than
// maxConnsPerSource TCP connections (each costs a goroutine and a buffer
// for up to tcpIdleTimeout); the ones within the cap are still served.
func TestServerTCPConnsPerSource(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() { s.Close(); <-done })
	conns := make([]net.Conn, maxConnsPerSource+1)
	for i := range conns {
		if conns[i], err = net.Dial("tcp", l.Addr().String()); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	// The server accepts in order: the last connection is over the cap.
	last := conns[len(conns)-1]
	last.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := last.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("connection %d: %v, want closed by the server", len(conns), err)
	}
	if got := s.Stats().TCPRejected; got != 1 {
		t.Errorf("TCPRejected = %d, want 1", got)
	}
	c := conns[0]
	if _, err := c.Write(rawRequest(t)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := readFull(c, make([]byte, 20)); err != nil {
		t.Errorf("connection within the cap: %v", err)
	}
}

// TestServerTCPSurvivesEMFILE: running out of descriptors (which remote
// clients can cause) pauses accepting; it must not stop the TCP server.
func TestServerTCPSurvivesEMFILE(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	fl := netcoretest.NewListener(l, 3)
	done := make(chan error, 1)
	go func() { done <- s.Serve(fl) }()
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(rawRequest(t)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readFull(c, make([]byte, 20)); err != nil {
		select {
		case err := <-done:
			t.Fatalf("Serve returned %v after EMFILE", err)
		default:
			t.Fatalf("no answer after EMFILE: %v", err)
		}
	}
	if fl.Failures.Load() != 3 || s.Stats().ReadErrors != 3 {
		t.Errorf("%d EMFILE accepts, Stats().ReadErrors %d; want 3 and 3", fl.Failures.Load(), s.Stats().ReadErrors)
	}
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
}

// TestServerUDPSurvivesEMFILE: a UDP read failing with EMFILE is counted and
// serving goes on.
func TestServerUDPSurvivesEMFILE(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Every reader (one per CPU) may take some of the failures.
	fp := netcoretest.NewPacketConn(pc, 5)
	s := &Server{}
	done := make(chan error, 1)
	go func() { done <- s.ServePacket(fp) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("ServePacket returned %v", err)
		}
	})
	dst := netcore.AddrPort(pc.LocalAddr())
	var got []datagram
	for try := 0; try < 20 && len(got) == 0; try++ {
		_, got = exchange(t, dst, rawRequest(t), 250*time.Millisecond)
	}
	if len(got) == 0 {
		t.Fatal("no answer after EMFILE reads")
	}
	if fp.Failures.Load() != 5 || s.Stats().ReadErrors != 5 {
		t.Errorf("%d EMFILE reads, Stats().ReadErrors %d; want 5 and 5", fp.Failures.Load(), s.Stats().ReadErrors)
	}
}

// TestListenAndServeBusyPort: an address another socket holds (UDP or TCP)
// is an error, not a server that shares the port with it.
func TestListenAndServeBusyPort(t *testing.T) {
	t.Run("udp", func(t *testing.T) {
		busy, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		s := &Server{}
		err = s.ListenAndServe(busy.LocalAddr().String())
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("ListenAndServe on a busy UDP port: %v, want EADDRINUSE", err)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		busy, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		s := &Server{}
		err = s.ListenAndServe(busy.Addr().String())
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("ListenAndServe on a busy TCP port: %v, want EADDRINUSE", err)
		}
	})
	t.Run("alternate", func(t *testing.T) {
		busy, err := net.ListenPacket("udp4", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		s := &Server{Alternate: netcore.AddrPort(busy.LocalAddr())}
		p := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1+s.Alternate.Port()%60000)
		err = s.ListenAndServe(p.String())
		if err == nil {
			t.Fatal("ListenAndServe with a busy alternate address succeeded")
		}
	})
}

// TestListenAndServe serves a plain server on an address picked by the
// system and answers on it; Close ends it with ErrServerClosed.
func TestListenAndServe(t *testing.T) {
	// A free port for both UDP and TCP: take a UDP one, and try TCP on it.
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		pc.Close()
		s := &Server{}
		done := make(chan error, 1)
		go func() { done <- s.ListenAndServe(addr) }()
		dst := netip.MustParseAddrPort(addr)
		var got []datagram
		for try := 0; try < 20 && len(got) == 0; try++ {
			select {
			case err := <-done:
				t.Logf("port taken meanwhile (%v); trying another", err)
				got = nil
				try = 20
				continue
			default:
			}
			_, got = exchange(t, dst, rawRequest(t), 100*time.Millisecond)
		}
		if len(got) == 0 {
			s.Close()
			continue
		}
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("ListenAndServe returned %v, want ErrServerClosed", err)
		}
		return
	}
	t.Skip("no port free for both UDP and TCP")
}

// closeCounter counts Close calls.
type closeCounter struct {
	net.PacketConn
	closed *atomic.Int32
}

func (c closeCounter) Close() error { c.closed.Add(1); return c.PacketConn.Close() }

// TestServeClosesWhatItWasGiven: every Serve method closes its sockets on
// return, also when it refuses them.
func TestServeClosesWhatItWasGiven(t *testing.T) {
	var closed atomic.Int32
	open := func() net.PacketConn {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return closeCounter{pc, &closed}
	}
	s := &Server{}
	// All four on one IP: refused, and all four closed.
	if err := s.ServeRFC5780(open(), open(), open(), open()); err == nil {
		t.Fatal("ServeRFC5780 accepted four sockets on one IP")
	}
	if n := closed.Load(); n != 4 {
		t.Errorf("ServeRFC5780 refused its sockets and closed %d of 4", n)
	}
	// A listener whose Accept fails for good ends Serve, which closes it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // Accept fails at once with a non-temporary error
	if err := s.Serve(l); err == nil || errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve on a closed listener: %v", err)
	}
	// After Close, serving closes what it is given at once.
	s.Close()
	closed.Store(0)
	if err := s.ServePacket(open()); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServePacket after Close: %v", err)
	}
	if closed.Load() != 1 {
		t.Error("ServePacket after Close left the socket open")
	}
}
