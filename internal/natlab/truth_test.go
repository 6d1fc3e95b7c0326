package natlab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

// These tests prove the lab's ground truth with plain UDP sockets, without
// any third-party tool: what source address and port Server sees from LAN1
// for different destinations (mapping), which of Server's sockets can reach
// a mapping (filtering), and whether LAN2 reaches LAN1 through its public
// mapping (hairpinning).

// quiet is how long a test waits before concluding that a packet was not
// delivered, where no marker packet can prove it. Packets in a lab cross a
// few veths in well under a millisecond.
const quiet = time.Second

// straggler is how long reaches waits after its marker for a probe that
// took another CPU's queue and was overtaken (rare, but possible).
const straggler = 100 * time.Millisecond

func udpListen(t *testing.T, lab *Lab, h Host, addr netip.Addr) net.PacketConn {
	t.Helper()
	a := ":0"
	if addr.IsValid() {
		a = netip.AddrPortFrom(addr, 0).String()
	}
	pc, err := lab.ListenPacket(h, "udp4", a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func apOf(a net.Addr) netip.AddrPort {
	return a.(*net.UDPAddr).AddrPort()
}

// recv reads one datagram, waiting at most d.
func recv(pc net.PacketConn, d time.Duration) ([]byte, netip.AddrPort, error) {
	buf := make([]byte, 1500)
	if err := pc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return nil, netip.AddrPort{}, err
	}
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	return buf[:n], apOf(from), nil
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// mappingOf sends from c to dst and returns the source dst saw (invalid if
// nothing arrived).
func mappingOf(t *testing.T, c, dst net.PacketConn) netip.AddrPort {
	t.Helper()
	if _, err := c.WriteTo([]byte("map"), dst.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_, from, err := recv(dst, quiet)
	if isTimeout(err) {
		return netip.AddrPort{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return from
}

// reaches reports whether a datagram from probe to the mapping m arrives at
// c. It then sends a marker from via (a socket that can reach m) and reads
// until the marker: the probe, had it passed, would have arrived first.
func reaches(t *testing.T, c, probe, via net.PacketConn, m netip.AddrPort) bool {
	t.Helper()
	to := net.UDPAddrFromAddrPort(m)
	if _, err := probe.WriteTo([]byte("probe"), to); err != nil {
		t.Fatal(err)
	}
	if _, err := via.WriteTo([]byte("marker"), to); err != nil {
		t.Fatal(err)
	}
	got := false
	for {
		p, _, err := recv(c, 3*time.Second)
		if err != nil {
			t.Fatalf("waiting for marker: %v", err)
		}
		switch string(p) {
		case "probe":
			got = true
		case "marker":
			if !got {
				p, _, err := recv(c, straggler)
				got = err == nil && string(p) == "probe"
			}
			return got
		}
	}
}

type observed struct {
	mapping, filtering Behavior
	hairpin            bool
	hairpinFrom        netip.AddrPort
}

// observe measures site A's behaviour from LAN1 with Server's sockets.
func observe(t *testing.T, lab *Lab) observed {
	t.Helper()
	a1, a2 := lab.ServerAddrs()
	s1 := udpListen(t, lab, Server, a1)
	s1b := udpListen(t, lab, Server, a1)
	s2 := udpListen(t, lab, Server, a2)
	var o observed

	c := udpListen(t, lab, LAN1, netip.Addr{})
	m1 := mappingOf(t, c, s1)
	if !m1.IsValid() {
		return o // nothing gets through: UDP blocked
	}
	m2 := mappingOf(t, c, s2)
	m3 := mappingOf(t, c, s1b)
	t.Logf("LAN1 %v mapped to %v (server addr 1), %v (addr 2), %v (addr 1, other port)", c.LocalAddr(), m1, m2, m3)
	switch {
	case m1 == m2 && m1 == m3:
		o.mapping = EndpointIndependent
	case m1 == m3:
		o.mapping = AddressDependent
	default:
		o.mapping = AddressAndPortDependent
	}

	// Filtering, on a fresh mapping that has only talked to s1.
	c2 := udpListen(t, lab, LAN1, netip.Addr{})
	m := mappingOf(t, c2, s1)
	if !m.IsValid() {
		t.Fatal("second mapping got nowhere")
	}
	switch {
	case reaches(t, c2, s2, s1, m):
		o.filtering = EndpointIndependent
	case reaches(t, c2, s1b, s1, m):
		o.filtering = AddressDependent
	default:
		o.filtering = AddressAndPortDependent
	}

	// Hairpinning: LAN2 to c2's public mapping.
	h := udpListen(t, lab, LAN2, netip.Addr{})
	if _, err := h.WriteTo([]byte("hairpin"), net.UDPAddrFromAddrPort(m)); err != nil {
		t.Fatal(err)
	}
	for {
		p, from, err := recv(c2, quiet)
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(p, []byte("hairpin")) {
			o.hairpin, o.hairpinFrom = true, from
			break
		}
	}
	return o
}

func TestGroundTruth(t *testing.T) {
	for _, k := range Kinds() {
		for _, hairpin := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/hairpin=%v", k, hairpin), func(t *testing.T) {
				t.Parallel()
				lab := New(t, Config{Kind: k, Hairpin: hairpin})
				o := observe(t, lab)
				if o.mapping != k.Mapping() {
					t.Errorf("mapping: observed %v, kind claims %v", o.mapping, k.Mapping())
				}
				if o.filtering != k.Filtering() {
					t.Errorf("filtering: observed %v, kind claims %v", o.filtering, k.Filtering())
				}
				if o.hairpin != k.Hairpins(hairpin) {
					t.Errorf("hairpinning: observed %v, kind claims %v", o.hairpin, k.Hairpins(hairpin))
				}
				if o.hairpin && k != NoNAT && o.hairpinFrom.Addr() != lab.PublicAddr() {
					t.Errorf("hairpinned packet came from %v, want the public address %v", o.hairpinFrom, lab.PublicAddr())
				}
				t.Logf("observed mapping %v, filtering %v, hairpin %v (from %v)", o.mapping, o.filtering, o.hairpin, o.hairpinFrom)
			})
		}
	}
}

// tcpFrom dials addr from host and local port port (0: any) with
// SO_REUSEADDR, so that several connections can share one local port, and
// returns the local port used and the remote address the server saw.
func tcpFrom(t *testing.T, lab *Lab, host Host, port int, addr net.Addr) (int, netip.AddrPort) {
	t.Helper()
	var local int
	var seen netip.AddrPort
	err := lab.Do(host, func() error {
		d := net.Dialer{
			LocalAddr: &net.TCPAddr{Port: port},
			Timeout:   3 * time.Second,
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
				}); err != nil {
					return err
				}
				return serr
			},
		}
		c, err := d.Dial("tcp4", addr.String())
		if err != nil {
			return err
		}
		defer c.Close()
		local = c.LocalAddr().(*net.TCPAddr).Port
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		seen, err = netip.ParseAddrPort(string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return local, seen
}

func TestTCPMapping(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			lab := New(t, Config{Kind: k})
			a1, a2 := lab.ServerAddrs()
			var lns []net.Listener
			for _, a := range []netip.Addr{a1, a1, a2} {
				ln, err := lab.Listen(Server, "tcp4", netip.AddrPortFrom(a, 0).String())
				if err != nil {
					t.Fatal(err)
				}
				serveRemote(t, ln)
				lns = append(lns, ln)
			}
			port, m1 := tcpFrom(t, lab, LAN1, 0, lns[0].Addr())
			_, m3 := tcpFrom(t, lab, LAN1, port, lns[1].Addr())
			_, m2 := tcpFrom(t, lab, LAN1, port, lns[2].Addr())
			var got Behavior
			switch {
			case m1 == m2 && m1 == m3:
				got = EndpointIndependent
			case m1 == m3:
				got = AddressDependent
			default:
				got = AddressAndPortDependent
			}
			if got != k.TCPMapping() {
				t.Errorf("TCP from LAN1 port %d seen as %v, %v (other port), %v (other address): %v, kind claims %v", port, m1, m3, m2, got, k.TCPMapping())
			}
			if m1.Addr() != lab.PublicAddr() {
				t.Errorf("TCP seen from %v, want the public address %v", m1, lab.PublicAddr())
			}
		})
	}
}
