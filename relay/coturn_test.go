package relay

import (
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/netcore"
)

// freeUDPPort picks a loopback UDP port for a program that wants a number.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return int(netcore.AddrPort(pc.LocalAddr()).Port())
}

// startTurnutilsPeer runs coturn's echo peer on loopback.
func startTurnutilsPeer(t testing.TB, path string) int {
	t.Helper()
	port := freeUDPPort(t)
	cmd := exec.Command(path, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Wait until the peer's port is taken: its readiness signal.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return port
		}
		pc.Close()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("turnutils_peer did not bind its port")
	return 0
}

type uclientResult struct {
	sent, received, lost int
	rtt                  float64 // ms
	out                  string
}

var (
	reSent     = regexp.MustCompile(`Total transmit time is \d+`)
	reLost     = regexp.MustCompile(`Total lost packets (\d+)`)
	reSendRecv = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	reRTT      = regexp.MustCompile(`Average round trip delay ([\d.]+) ms`)
)

func runUclient(t testing.TB, path string, args ...string) uclientResult {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), path, args...)
	out, _ := cmd.CombinedOutput()
	r := uclientResult{out: string(out)}
	if m := reSendRecv.FindAllStringSubmatch(r.out, -1); len(m) > 0 {
		last := m[len(m)-1]
		r.sent, _ = strconv.Atoi(last[1])
		r.received, _ = strconv.Atoi(last[2])
	}
	if m := reLost.FindStringSubmatch(r.out); m != nil {
		r.lost, _ = strconv.Atoi(m[1])
	}
	if m := reRTT.FindStringSubmatch(r.out); m != nil {
		r.rtt, _ = strconv.ParseFloat(m[1], 64)
	}
	_ = reSent
	return r
}

func TestCoturnClient(t *testing.T) {
	paths := interop.Need(t, "turnutils_uclient", "turnutils_peer")
	peerPort := startTurnutilsPeer(t, paths["turnutils_peer"])
	s := &Server{
		Realm:   "hairpin.test",
		Secrets: []string{"s3cret"},
		Peers:   PeerPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
	}
	addr := netip.MustParseAddrPort(serve(t, s, "udp"))
	tcpAddr := netip.MustParseAddrPort(serve(t, s, "tcp"))
	tlsSrv := &Server{Realm: "hairpin.test", Secrets: []string{"s3cret"}, TLSConfig: selfSigned(t), Peers: s.Peers}
	tlsAddr := netip.MustParseAddrPort(serve(t, tlsSrv, "tls"))
	base := []string{"-e", "127.0.0.1", "-r", strconv.Itoa(peerPort), "-z", "5", "-c"}

	t.Run("relays with -W", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"udp channels", []string{"-p", strconv.Itoa(int(addr.Port()))}},
			{"udp send indications", []string{"-s", "-p", strconv.Itoa(int(addr.Port()))}},
			{"tcp", []string{"-t", "-p", strconv.Itoa(int(tcpAddr.Port()))}},
			{"tls", []string{"-t", "-S", "-p", strconv.Itoa(int(tlsAddr.Port()))}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				args := append(append([]string{"-W", "s3cret", "-u", "bob", "-n", "100", "-m", "2", "-l", "160"}, base...), tc.args...)
				r := runUclient(t, paths["turnutils_uclient"], append(args, "127.0.0.1")...)
				if r.sent == 0 || r.received != r.sent || r.lost != 0 {
					t.Fatalf("sent %d received %d lost %d\n%s", r.sent, r.received, r.lost, tail(r.out))
				}
				t.Logf("sent %d received %d lost %d rtt %.2f ms", r.sent, r.received, r.lost, r.rtt)
			})
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		before := s.Stats().AuthFailures
		args := append(append([]string{"-v", "-W", "not-the-secret", "-u", "bob", "-n", "5"}, base...),
			"-p", strconv.Itoa(int(addr.Port())), "127.0.0.1")
		r := runUclient(t, paths["turnutils_uclient"], args...)
		// uclient answers every 401 by retrying and does not print codes:
		// our counter of 401 replies is the witness.
		if r.received != 0 || !strings.Contains(r.out, "Cannot complete Allocation") {
			t.Fatalf("want a refusal, got received=%d\n%s", r.received, tail(r.out))
		}
		if s.Stats().AuthFailures == before {
			t.Error("no 401 for bad credentials was sent")
		}
	})

	t.Run("expired credential", func(t *testing.T) {
		user := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10) + ":bob"
		args := append(append([]string{"-v", "-u", user, "-w", RESTPassword("s3cret", user), "-n", "5"}, base...),
			"-p", strconv.Itoa(int(addr.Port())), "127.0.0.1")
		before := s.Stats().AuthFailures
		r := runUclient(t, paths["turnutils_uclient"], args...)
		if r.received != 0 || !strings.Contains(r.out, "Cannot complete Allocation") {
			t.Fatalf("want a refusal, got received=%d\n%s", r.received, tail(r.out))
		}
		if s.Stats().AuthFailures == before {
			t.Error("no 401 for the expired credential was sent")
		}
	})
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return strings.Join(lines, "\n")
}
