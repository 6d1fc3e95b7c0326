package nat

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
)

// lockedBuffer collects a child's output for the test log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// coturnArgs are the arguments for a STUN-only coturn with RFC 5780 on two
// IPs and two ports.
func coturnArgs(dir string, ip1, ip2 netip.Addr, port, altPort uint16) []string {
	return []string{
		"-n", "-S", "--no-cli", "--no-tls", "--no-dtls", "--no-auth",
		"-L", ip1.String(), "-L", ip2.String(),
		"-p", strconv.Itoa(int(port)), "--alt-listening-port", strconv.Itoa(int(altPort)),
		"--log-file", "stdout", "--simple-log", "--no-software-attribute",
		"--pidfile", filepath.Join(dir, "turnserver.pid"),
	}
}

// waitSTUN polls dst with Binding requests from a socket made by listen
// until one is answered: the readiness signal of a server we did not write.
func waitSTUN(ctx context.Context, listen func() (net.PacketConn, error), dst netip.AddrPort) error {
	pc, err := listen()
	if err != nil {
		return err
	}
	defer pc.Close()
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		req := request{txid: newTxID()}
		if _, err := pc.WriteTo(req.encode(), net.UDPAddrFromAddrPort(dst)); err != nil {
			return err
		}
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err == nil {
			if m, err := parseMessage(buf[:n]); err == nil && m.txid == req.txid {
				return nil
			}
		}
	}
	return fmt.Errorf("STUN server at %v never answered: %w", dst, ctx.Err())
}

// natdiscoveryResult reads coturn's turnutils_natdiscovery text output.
func natdiscoveryResult(out string) (mapping, filtering Behavior) {
	switch {
	case strings.Contains(out, "No NAT! (Endpoint Independent Mapping)"),
		strings.Contains(out, "NAT with Endpoint Independent Mapping!"):
		mapping = EndpointIndependent
	case strings.Contains(out, "NAT with Address Dependent Mapping!"):
		mapping = AddressDependent
	case strings.Contains(out, "NAT with Address and Port Dependent Mapping!"):
		mapping = AddressAndPortDependent
	}
	switch {
	case strings.Contains(out, "NAT with Endpoint Independent Filtering!"):
		filtering = EndpointIndependent
	case strings.Contains(out, "NAT with Address Dependent Filtering!"):
		filtering = AddressDependent
	case strings.Contains(out, "NAT with Address and Port Dependent Filtering!"):
		filtering = AddressAndPortDependent
	}
	return mapping, filtering
}

// startCoturn runs a STUN-only coturn with RFC 5780 on 127.0.0.1 and
// 127.0.0.2 and returns its primary and OTHER-ADDRESS. Ports are picked by
// binding and closing, so another process may take one in between: then
// coturn fails to bind and the start is retried with new ports.
func startCoturn(t testing.TB) (primary, other netip.AddrPort) {
	t.Helper()
	paths := interop.Need(t, "turnserver")
	for attempt := 1; ; attempt++ {
		pcs := listenFour(t)
		p := pcs[0].LocalAddr().(*net.UDPAddr).AddrPort()
		o := pcs[3].LocalAddr().(*net.UDPAddr).AddrPort()
		for _, pc := range pcs {
			pc.Close()
		}
		cmd := exec.Command(paths["turnserver"], coturnArgs(t.TempDir(), p.Addr(), o.Addr(), p.Port(), o.Port())...)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			cmd.Wait()
			close(done)
		}()
		stop := func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(3 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := waitSTUN(ctx, func() (net.PacketConn, error) { return net.ListenPacket("udp4", "127.0.0.1:0") }, p)
		cancel()
		if err == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("turnserver output:\n%s", out.String())
				}
			})
			return p, o
		}
		stop()
		if attempt == 3 {
			t.Fatalf("%v\nturnserver output:\n%s", err, out.String())
		}
	}
}

func TestClientAgainstCoturn(t *testing.T) {
	p, o := startCoturn(t)
	c := &Client{Servers: []string{p.String()}, TCP: true}
	rep, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range rep.Probes {
		t.Logf("%+v", pr)
	}
	if rep.Server.RFC5780 != Supported || rep.Server.OtherAddress != o {
		t.Errorf("coturn check: %+v", rep.Server)
	}
	if rep.BehindNAT != No || rep.Mapping != EndpointIndependent || rep.Filtering != EndpointIndependent || rep.Hairpinning != Yes {
		t.Errorf("report against coturn: behindNAT %v mapping %v filtering %v hairpin %v",
			rep.BehindNAT, rep.Mapping, rep.Filtering, rep.Hairpinning)
	}
	if rep.TCP == nil || rep.TCP.Mapping != EndpointIndependent {
		t.Errorf("TCP against coturn: %+v", rep.TCP)
	}
}

func TestNatdiscoveryAgainstServer(t *testing.T) {
	paths := interop.Need(t, "turnutils_natdiscovery")
	s := &Server{}
	addrs := startServer(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, paths["turnutils_natdiscovery"], "-m", "-f", "-H",
		"-p", strconv.Itoa(int(addrs[0].Port())), addrs[0].Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("natdiscovery: %v\n%s", err, out)
	}
	mapping, filtering := natdiscoveryResult(string(out))
	if mapping != EndpointIndependent || filtering != EndpointIndependent {
		t.Errorf("natdiscovery against our server: mapping %v filtering %v\n%s", mapping, filtering, out)
	}
	// Its padded variant (-P: 1500-byte PADDING) must still work and
	// must not make us send more than it sent.
	out, err = exec.CommandContext(ctx, paths["turnutils_natdiscovery"], "-f", "-P",
		"-p", strconv.Itoa(int(addrs[0].Port())), addrs[0].Addr().String()).CombinedOutput()
	if err != nil {
		t.Fatalf("natdiscovery -P: %v\n%s", err, out)
	}
	if _, filtering := natdiscoveryResult(string(out)); filtering != EndpointIndependent {
		t.Errorf("natdiscovery -P: filtering %v\n%s", filtering, out)
	}
}

// TestPionNATBehaviourAgainstServer runs pion's own RFC 5780 client
// (cmd/stun-nat-behaviour, the stuntman-style prober of the Go ecosystem)
// against our server.
func TestPionNATBehaviourAgainstServer(t *testing.T) {
	paths := interop.Need(t, "go")
	bin := filepath.Join(t.TempDir(), "stun-nat-behaviour")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, paths["go"], "build", "-o", bin, "github.com/pion/stun/v3/cmd/stun-nat-behaviour").CombinedOutput(); err != nil {
		t.Skipf("cannot build pion's stun-nat-behaviour: %v\n%s", err, out)
	}
	addrs := startServer(t, &Server{})
	out, err := exec.CommandContext(ctx, bin, "-server", addrs[0].String(), "-timeout", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("stun-nat-behaviour: %v\n%s", err, out)
	}
	// (It says "endpoint independent", not "(no NAT)": it binds 0.0.0.0 and
	// compares that with the mapped address, the misreading our client avoids.)
	for _, want := range []string{
		"=> NAT mapping behavior: endpoint independent",
		"=> NAT filtering behavior: endpoint independent",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("stun-nat-behaviour output lacks %q:\n%s", want, out)
		}
	}
}
