package natlab

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
)

// startCoturn runs coturn's turnserver on Server with both addresses and the
// alternative port, as an RFC 5780 server, and waits until it answers.
// With v6 it listens on Server's IPv6 addresses instead (Config.IPv6).
func startCoturn(t *testing.T, lab *Lab, v6 bool) {
	t.Helper()
	interop.Need(t, "turnserver")
	dir := t.TempDir()
	a1, a2 := lab.ServerAddrs()
	network := "udp4"
	if v6 {
		a1, a2 = lab.Addrs6(Server)[0], lab.Addrs6(Server)[1]
		network = "udp6"
	}
	_, err := lab.Start(Server, "turnserver", "-n",
		"--no-auth", "--no-tls", "--no-dtls", "--no-cli",
		"-L", a1.String(), "-L", a2.String(),
		"--listening-port", "3478", "--alt-listening-port", "3479",
		"--pidfile", filepath.Join(dir, "turnserver.pid"),
		"--userdb", filepath.Join(dir, "turndb"),
		"--log-file", "stdout", "--simple-log")
	if err != nil {
		t.Fatal(err)
	}
	// Ready when each of the four addresses answers a STUN Binding request.
	pc, err := lab.ListenPacket(Server, network, ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// Generous: a loaded CI machine starts many of these at once.
	deadline := time.Now().Add(20 * time.Second)
	for _, ap := range []netip.AddrPort{
		netip.AddrPortFrom(a1, 3478), netip.AddrPortFrom(a1, 3479),
		netip.AddrPortFrom(a2, 3478), netip.AddrPortFrom(a2, 3479),
	} {
		a, to := ap.String(), net.UDPAddrFromAddrPort(ap)
		// Responses to earlier, unanswered-in-time requests count too:
		// matching only the last one could chase a queue of late answers.
		sent := map[string]bool{}
		for {
			req := bindingRequest()
			sent[string(req[8:20])] = true
			if _, err := pc.WriteTo(req, to); err != nil {
				t.Fatal(err)
			}
			p, _, err := recv(pc, 100*time.Millisecond)
			if err == nil && len(p) >= 20 && sent[string(p[8:20])] {
				break
			}
			if time.Now().After(deadline) {
				ss, _ := lab.Command(Server, "ss", "-uanp").CombinedOutput()
				ps, _ := exec.Command("ps", "-o", "pid,stat,wchan:20,args", "-C", "turnserver").CombinedOutput()
				t.Fatalf("turnserver does not answer on %s\nss -uanp:\n%s\nps:\n%s", a, ss, ps)
			}
		}
	}
}

// bindingRequest returns a STUN Binding request (RFC 8489) without attributes.
func bindingRequest() []byte {
	b := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}
	id := make([]byte, 12)
	rand.Read(id)
	return append(b, id...)
}

// discovery is what coturn's turnutils_natdiscovery concluded.
type discovery struct {
	noNAT              bool // "No NAT!" (printed only when the local address is given with -L)
	mapping, filtering Behavior
	hairpin            bool
}

// parseNatDiscovery reads the conclusions out of turnutils_natdiscovery's
// output (coturn 4.6). Lines it does not know are ignored.
func parseNatDiscovery(out string) discovery {
	var d discovery
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		switch line {
		case "No NAT! (Endpoint Independent Mapping)":
			d.noNAT = true
		case "NAT with Endpoint Independent Mapping!":
			d.mapping = EndpointIndependent
		case "NAT with Address Dependent Mapping!":
			d.mapping = AddressDependent
		case "NAT with Address and Port Dependent Mapping!":
			d.mapping = AddressAndPortDependent
		case "NAT with Endpoint Independent Filtering!":
			d.filtering = EndpointIndependent
		case "NAT with Address Dependent Filtering!":
			d.filtering = AddressDependent
		case "NAT with Address and Port Dependent Filtering!":
			d.filtering = AddressAndPortDependent
		case "Received a request (maybe a successful hairpinning)":
			d.hairpin = true
		}
	}
	return d
}

// TestCoturnAgrees proves the lab against a tool nobody here wrote: for every
// kind (and hairpinning on and off where it applies), and over IPv6 for an
// open and a firewalled router, coturn's turnserver runs on Server with both
// addresses and the alternative port, and coturn's turnutils_natdiscovery
// runs on LAN1; what it discovers must be what the kind claims.
//
// Where the tool cannot see the truth:
//   - natdiscovery reports "No NAT!" only when the reflexive address equals
//     the local one, which needs the local address (-L): the test passes -L
//     with LAN1's address for every kind. It then still runs the RFC 5780
//     tests and prints endpoint-independent mapping and filtering for NoNAT,
//     which is also true there.
//   - With UDP blocked no response arrives; the tool prints timeouts and no
//     conclusion at all, which is what is asserted. Its -H then even sends
//     to the unset (any) reflexive address and fails with "Address family
//     not supported by protocol"; only the absence of hairpinning is used.
//   - Its hairpinning test waits 3 s for the hairpinned request and then 3 s
//     on the second socket; a negative result therefore takes 6 s.
func TestCoturnAgrees(t *testing.T) {
	paths := interop.Need(t, "turnserver", "turnutils_natdiscovery")
	type tc struct {
		kind    Kind
		hairpin bool
		v6      bool // over IPv6 (no NAT, a firewall or none)
	}
	var cases []tc
	for _, k := range Kinds() {
		switch k {
		case OneToOne, AddressRestricted, PortRestricted, Symmetric:
			cases = append(cases, tc{k, false, false}, tc{k, true, false})
		default:
			cases = append(cases, tc{k, k == DoubleNAT, false})
		}
	}
	cases = append(cases, tc{NoNAT, false, true}, tc{PortRestricted, false, true})
	start := time.Now()
	t.Cleanup(func() {
		t.Logf("coturn self-test of %d labs took %v", len(cases), time.Since(start).Round(time.Millisecond))
	})

	// All labs run at once (the tool mostly waits on 3 s timeouts), so they
	// are built by this test and only checked in subtests: t.Parallel would
	// cap the concurrency at GOMAXPROCS.
	type result struct {
		mf, hp       []byte
		mfErr, hpErr error
	}
	results := make([]result, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		lab := New(t, Config{Kind: c.kind, Hairpin: c.hairpin, IPv6: c.v6})
		startCoturn(t, lab, c.v6)
		server := lab.Addr(Server).String()
		local := lab.Addr(LAN1).String()
		if c.v6 {
			server, local = lab.Addr6(Server).String(), lab.Addr6(LAN1).String()
		}
		r := &results[i]
		mf := lab.CommandContext(t.Context(), LAN1, paths["turnutils_natdiscovery"], "-m", "-f", "-L", local, server)
		hp := lab.CommandContext(t.Context(), LAN1, paths["turnutils_natdiscovery"], "-H", "-L", local, server)
		wg.Go(func() { r.mf, r.mfErr = mf.CombinedOutput() })
		wg.Go(func() { r.hp, r.hpErr = hp.CombinedOutput() })
	}
	wg.Wait()

	// NATLAB_CAPTURE=1 refreshes the captured outputs in testdata that
	// TestParseNatDiscovery reads.
	if os.Getenv("NATLAB_CAPTURE") != "" {
		for i, c := range cases {
			base := filepath.Join("testdata", "natdiscovery", caseName(c.kind, c.hairpin, c.v6))
			if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(base+"-mf.txt", results[i].mf, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(base+"-H.txt", results[i].hp, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	for i, c := range cases {
		t.Run(caseName(c.kind, c.hairpin, c.v6), func(t *testing.T) {
			r := results[i]
			if r.mfErr != nil && c.kind != UDPBlocked {
				t.Fatalf("natdiscovery -m -f: %v\n%s", r.mfErr, r.mf)
			}
			d := parseNatDiscovery(string(r.mf))
			d.hairpin = parseNatDiscovery(string(r.hp)).hairpin
			t.Logf("coturn: no NAT %v, mapping %v, filtering %v, hairpin %v", d.noNAT, d.mapping, d.filtering, d.hairpin)
			want := truth(c.kind, c.hairpin, c.v6)
			if d != want {
				t.Errorf("coturn discovered %+v, the kind claims %+v\n-m -f output:\n%s\n-H output (err %v):\n%s", d, want, r.mf, r.hpErr, r.hp)
			}
			if c.kind == UDPBlocked && !strings.Contains(string(r.mf), "STUN receive timeout") {
				t.Errorf("UDP blocked, but natdiscovery did not time out:\n%s", r.mf)
			}
		})
	}
}

// TestParseNatDiscovery reads outputs of turnutils_natdiscovery captured in
// the lab (NATLAB_CAPTURE=1 go test -run TestCoturnAgrees) and checks the
// parser against each kind's ground truth. It needs no root.
func TestParseNatDiscovery(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "natdiscovery", "*-mf.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured outputs: %v", err)
	}
	kinds := map[string]Kind{}
	for _, k := range Kinds() {
		kinds[k.String()] = k
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), "-mf.txt")
		t.Run(name, func(t *testing.T) {
			rest, v6 := strings.CutSuffix(name, "-ipv6")
			kindName, hp, ok := strings.Cut(rest, "-hairpin-")
			k, known := kinds[kindName]
			if !ok || !known {
				t.Fatalf("cannot read kind from file name %q", name)
			}
			mf, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			h, err := os.ReadFile(strings.TrimSuffix(f, "-mf.txt") + "-H.txt")
			if err != nil {
				t.Fatal(err)
			}
			d := parseNatDiscovery(string(mf))
			d.hairpin = parseNatDiscovery(string(h)).hairpin
			want := truth(k, hp == "true", v6)
			if d != want {
				t.Errorf("parsed %+v, want %+v", d, want)
			}
		})
	}
}

// caseName names a self-test case (and its captured outputs).
func caseName(k Kind, hairpin, v6 bool) string {
	n := fmt.Sprintf("%v-hairpin-%v", k, hairpin)
	if v6 {
		n += "-ipv6"
	}
	return n
}

// truth is what natdiscovery should find on LAN1 in a lab of kind k. Over
// IPv6 there is no NAT: the reflexive address is LAN1's own (so "No NAT!",
// endpoint-independent mapping, and the -H request reaches it directly), and
// filtering is the router's firewall.
func truth(k Kind, hairpin, v6 bool) discovery {
	if v6 {
		return discovery{noNAT: true, mapping: EndpointIndependent, filtering: k.IPv6Filtering(), hairpin: true}
	}
	return discovery{noNAT: k == NoNAT, mapping: k.Mapping(), filtering: k.Filtering(), hairpin: k.Hairpins(hairpin)}
}
