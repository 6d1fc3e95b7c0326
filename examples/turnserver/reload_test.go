package main

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/leakcheck"
	"github.com/pion/turn/v5"
)

var turnserverBin = &proctest.Binary{Dir: "."}

func TestMain(m *testing.M) {
	code := leakcheck.Run(m)
	turnserverBin.Cleanup()
	os.Exit(code)
}

// allocation is a TURN client with one UDP allocation on server.
type allocation struct {
	client  *turn.Client
	relayed net.PacketConn
	pc      net.PacketConn
	once    sync.Once
}

// close deallocates (a Refresh with lifetime 0) and closes the client.
func (a *allocation) close() {
	a.once.Do(func() {
		a.relayed.Close()
		a.client.Close()
		a.pc.Close()
	})
}

// allocate makes a UDP allocation as user with password and returns it,
// or the error of the Allocate request.
func allocate(t *testing.T, server, user, password string) (*allocation, error) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server,
		Username: user, Password: password, Conn: pc, RTO: 200 * time.Millisecond})
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		c.Close()
		pc.Close()
		t.Fatal(err)
	}
	relayed, err := c.Allocate()
	if err != nil {
		c.Close()
		pc.Close()
		return nil, err
	}
	a := &allocation{client: c, relayed: relayed, pc: pc}
	t.Cleanup(a.close)
	return a, nil
}

// relayedIP allocates and returns the IP of the relayed address the server
// advertised; the allocation is released again.
func relayedIP(t *testing.T, server, user, password string) string {
	t.Helper()
	a, err := allocate(t, server, user, password)
	if err != nil {
		t.Fatalf("allocate as %s: %v", user, err)
	}
	defer a.close()
	ap, err := netip.ParseAddrPort(a.relayed.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	return ap.Addr().String()
}

func relayConfig(listen, public, password string) string {
	return `relay:
  listen: ["` + listen + `"]
  realm: example.com
  users: {alice: "` + password + `"}
  public: "` + public + `"
  relayAddress: "127.0.0.1"
  allowPeers: ["198.51.100.0/24"]
`
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReload runs the binary: SIGHUP applies a new relay.public to new
// allocations and a new password at once (the old one is refused from
// then on), names a realm change as waiting for a restart, and a bad file
// is rejected with the running configuration kept.
func TestReload(t *testing.T) {
	bin := turnserverBin.Path(t)
	addr := proctest.FreePort(t)
	path := filepath.Join(t.TempDir(), "turnserver.yaml")
	writeFile(t, path, relayConfig(addr, "203.0.113.1", "pw1"))
	p := proctest.Start(t, exec.Command(bin, "-config", path))
	n := p.WaitFor(t, 0, "turnserver ready", 10*time.Second)
	if got := relayedIP(t, addr, "alice", "pw1"); got != "203.0.113.1" {
		t.Fatalf("relayed address %s, want the public 203.0.113.1", got)
	}

	writeFile(t, path, relayConfig(addr, "nope", "pw1"))
	p.Signal(t, syscall.SIGHUP)
	n = p.WaitFor(t, n, "reload rejected", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, `line 5: relay.public: \"nope\"`) {
		t.Errorf("the rejection does not name the key, line and value:\n%s", out)
	}
	if got := relayedIP(t, addr, "alice", "pw1"); got != "203.0.113.1" {
		t.Fatalf("after a bad file: relayed address %s, want the old 203.0.113.1", got)
	}

	old, err := allocate(t, addr, "alice", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	peer := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 9}
	if err := old.client.CreatePermission(peer); err != nil {
		t.Fatalf("permission before the reload: %v", err)
	}
	writeFile(t, path, strings.Replace(relayConfig(addr, "203.0.113.2", "pw2"), "example.com", "example.org", 1))
	p.Signal(t, syscall.SIGHUP)
	p.WaitFor(t, n, "take effect at the next restart", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, "restart=[relay.realm]") || !strings.Contains(out, "credentials replaced") {
		t.Errorf("the reload does not replace the credentials and name exactly relay.realm as waiting for a restart:\n%s", out)
	}
	if got := relayedIP(t, addr, "alice", "pw2"); got != "203.0.113.2" {
		t.Fatalf("after reload: relayed address %s, want the new public 203.0.113.2", got)
	}
	if _, err := allocate(t, addr, "alice", "pw1"); err == nil {
		t.Error("the old password still makes allocations after the reload replaced it")
	}
	if err := old.client.CreatePermission(&net.UDPAddr{IP: net.IPv4(198, 51, 100, 8), Port: 9}); err == nil {
		t.Error("an allocation made with the old password still creates permissions after the reload")
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.WaitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// allocateTCP makes an allocation over a TCP connection to server (TURN
// over TCP, RFC 6062's control connection); it lives until the test ends.
func allocateTCP(t *testing.T, server, user, password string) {
	t.Helper()
	tc, err := net.Dial("tcp", server)
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server,
		Username: user, Password: password, Conn: turn.NewSTUNConn(tc), RTO: 200 * time.Millisecond})
	if err != nil {
		tc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); tc.Close() })
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relayed, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relayed.Close() })
}

// TestShutdownTimeout: SIGTERM with an allocation open on a TCP connection
// drains it for -shutdown-timeout, then closes it and exits. (UDP
// allocations end at once: their packets arrive on the listening socket,
// which a shutdown frees at once for the next instance.)
func TestShutdownTimeout(t *testing.T) {
	bin := turnserverBin.Path(t)
	addr := proctest.FreePort(t)
	path := filepath.Join(t.TempDir(), "turnserver.yaml")
	writeFile(t, path, relayConfig(addr, "203.0.113.1", "pw1"))
	p := proctest.Start(t, exec.Command(bin, "-config", path, "-shutdown-timeout", "1s"))
	p.WaitFor(t, 0, "turnserver ready", 10*time.Second)
	allocateTCP(t, addr, "alice", "pw1")
	start := time.Now()
	p.Signal(t, syscall.SIGTERM)
	code := p.WaitExit(t, 10*time.Second)
	if took := time.Since(start); took < 900*time.Millisecond || took > 4*time.Second {
		t.Errorf("exit %s after SIGTERM with -shutdown-timeout 1s and an allocation open", took.Round(time.Millisecond))
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if out := p.Output(); !strings.Contains(out, "shutdown reached -shutdown-timeout") {
		t.Errorf("no log of the allocations closed at the deadline:\n%s", out)
	}
}

// TestHelpCheckAndBadConfig: -h prints the description and the common
// flags and exits 0; -check passes turnserver.yaml; a bad file fails the
// start naming its key and line.
func TestHelpCheckAndBadConfig(t *testing.T) {
	bin := turnserverBin.Path(t)
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), description+"\n") || !strings.Contains(string(out), "-shutdown-timeout") ||
		!strings.Contains(string(out), "-config") || !strings.Contains(string(out), "-check") {
		t.Fatalf("-h: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "-config", "turnserver.yaml", "-check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("turnserver.yaml -check: %v\n%s", err, out)
	}
	var stdout, stderr strings.Builder
	path := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, path, relayConfig("127.0.0.1:0", "203.0.113.1", ""))
	if code := run([]string{"-config", path}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "relay.users.alice") {
		t.Errorf("empty password: exit %d, stderr %q", code, stderr.String())
	}
	if code := run([]string{"-config", path, "-credentials", "0.0.0.0:8088"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "-credentials") {
		t.Errorf("public -credentials: exit %d, stderr %q", code, stderr.String())
	}
}
