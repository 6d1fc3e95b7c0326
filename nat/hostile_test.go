package nat

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// fakeServer answers on a loopback socket with whatever answer decides. It
// has a second socket, so answers can come from an unexpected address.
type fakeServer struct {
	main, side *net.UDPConn
	wg         sync.WaitGroup
}

// answer returns the datagram to send (nil: none) and whether to send it
// from the side socket.
type answerFunc func(req []byte, from netip.AddrPort, main, side netip.AddrPort) ([]byte, bool)

func startFake(t *testing.T, answer answerFunc) netip.AddrPort {
	t.Helper()
	f := &fakeServer{}
	var err error
	if f.main, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if f.side, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	mainAddr := f.main.LocalAddr().(*net.UDPAddr).AddrPort()
	sideAddr := f.side.LocalAddr().(*net.UDPAddr).AddrPort()
	f.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := f.main.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			out, viaSide := answer(buf[:n], from, mainAddr, sideAddr)
			if out == nil {
				continue
			}
			c := f.main
			if viaSide {
				c = f.side
			}
			c.WriteToUDPAddrPort(out, from)
		}
	})
	t.Cleanup(func() {
		f.main.Close()
		f.side.Close()
		f.wg.Wait()
	})
	return mainAddr
}

// honest builds the answer a correct server would give, then lets mutate
// change it.
func honest(req []byte, from netip.AddrPort, other netip.AddrPort, mutate func(m *stun.Message)) []byte {
	var in stun.Message
	in.Raw = req
	if in.Decode() != nil {
		return nil
	}
	m := stun.Message{TransactionID: in.TransactionID, Type: stun.BindingSuccess}
	if mutate != nil {
		mutate(&m)
	}
	m.WriteHeader()
	addAddr(&m, stun.AttrXORMappedAddress, from)
	if other.IsValid() {
		addAddr(&m, stun.AttrOtherAddress, other)
	}
	return m.Raw
}

func TestProbeHostileServers(t *testing.T) {
	silentPort := func() netip.AddrPort {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}()
	tests := []struct {
		name    string
		answer  answerFunc
		noAns   bool
		support Support
	}{
		{"silence", func([]byte, netip.AddrPort, netip.AddrPort, netip.AddrPort) ([]byte, bool) { return nil, false }, true, SupportUnknown},
		{"wrong transaction ID", func(req []byte, from, _, _ netip.AddrPort) ([]byte, bool) {
			return honest(req, from, netip.AddrPort{}, func(m *stun.Message) { m.TransactionID = stun.NewTransactionID() }), false
		}, true, SupportUnknown},
		{"answers from another address", func(req []byte, from, _, _ netip.AddrPort) ([]byte, bool) {
			return honest(req, from, netip.AddrPort{}, nil), true
		}, true, SupportUnknown},
		{"truncated", func(req []byte, from, _, _ netip.AddrPort) ([]byte, bool) {
			b := honest(req, from, netip.AddrPort{}, nil)
			return b[:len(b)-3], false
		}, true, SupportUnknown},
		{"oversized", func(req []byte, from, _, _ netip.AddrPort) ([]byte, bool) {
			b := honest(req, from, netip.AddrPort{}, nil)
			return append(b, make([]byte, 1200)...), false
		}, true, SupportUnknown},
		{"error instead of binding", func(req []byte, from, _, _ netip.AddrPort) ([]byte, bool) {
			b := honest(req, from, netip.AddrPort{}, func(m *stun.Message) { m.Type = stun.BindingError })
			return b[:20], false
		}, true, SupportUnknown},
		{"plain server", func(req []byte, from, _, _ netip.AddrPort) ([]byte, bool) {
			return honest(req, from, netip.AddrPort{}, nil), false
		}, false, NotSupported},
		{"bogus OTHER-ADDRESS", func(req []byte, from, main, _ netip.AddrPort) ([]byte, bool) {
			return honest(req, from, netip.AddrPortFrom(main.Addr(), main.Port()+1), nil), false
		}, false, Broken},
		{"OTHER-ADDRESS nobody answers at", func(req []byte, from, _, _ netip.AddrPort) ([]byte, bool) {
			return honest(req, from, silentPort, nil), false
		}, false, Broken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startFake(t, tt.answer)
			c := &Client{Servers: []string{addr.String()}, Timeout: 2 * time.Second, RTO: 50 * time.Millisecond}
			start := time.Now()
			rep, err := c.Probe(t.Context())
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("probe took %v with a 2s timeout", d)
			}
			if tt.noAns {
				if !errors.Is(err, ErrNoAnswer) || rep == nil || rep.UDP {
					t.Fatalf("err %v, report %+v; want ErrNoAnswer", err, rep)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Server.RFC5780 != tt.support {
				t.Errorf("server support %v, want %v (%q)", rep.Server.RFC5780, tt.support, rep.Server.Problems)
			}
			if rep.Filtering != BehaviorUnknown {
				t.Errorf("filtering %v from a server that cannot test it", rep.Filtering)
			}
			if rep.BehindNAT != No || rep.Classic != "unknown" {
				t.Errorf("behindNAT %v classic %q on loopback", rep.BehindNAT, rep.Classic)
			}
		})
	}
}

// fourSockets runs answer on an RFC 5780 socket set: it gets the request,
// the receiving socket's index and the four addresses, and returns the answer
// and the index of the socket to send it from (-1: no answer).
func fourSockets(t *testing.T, answer func(req []byte, from netip.AddrPort, idx int, addrs [4]netip.AddrPort) ([]byte, int)) [4]netip.AddrPort {
	pcs := listenFour(t)
	var addrs [4]netip.AddrPort
	for i, pc := range pcs {
		addrs[i] = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, pc := range pcs {
			pc.Close()
		}
		wg.Wait()
	})
	for i, pc := range pcs {
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if out, via := answer(buf[:n], from, i, addrs); via >= 0 {
					pcs[via].WriteToUDPAddrPort(out, from)
				}
			}
		})
	}
	return addrs
}

func hasChangeRequest(req []byte) bool {
	var m stun.Message
	m.Raw = req
	if m.Decode() != nil {
		return false
	}
	v, err := m.Get(attrChangeRequest)
	return err == nil && len(v) == 4 && v[3] != 0
}

// TestProbeChangeRequestBroken: servers with working alternate sockets that
// answer CHANGE-REQUEST from the primary address anyway, or drop it
// silently, must not make the filtering look like anything.
func TestProbeChangeRequestBroken(t *testing.T) {
	tests := []struct {
		name   string
		answer func(req []byte, from netip.AddrPort, idx int, addrs [4]netip.AddrPort) ([]byte, int)
	}{
		{"ignored", func(req []byte, from netip.AddrPort, idx int, addrs [4]netip.AddrPort) ([]byte, int) {
			return honest(req, from, addrs[idx^3], nil), idx
		}},
		// Without the verification this one reads as
		// address-and-port-dependent filtering on a host without NAT.
		{"dropped", func(req []byte, from netip.AddrPort, idx int, addrs [4]netip.AddrPort) ([]byte, int) {
			if hasChangeRequest(req) {
				return nil, -1
			}
			return honest(req, from, addrs[idx^3], nil), idx
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addrs := fourSockets(t, tt.answer)
			c := &Client{Servers: []string{addrs[0].String()}, Timeout: 2 * time.Second, RTO: 50 * time.Millisecond}
			rep, err := c.Probe(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Filtering != BehaviorUnknown || rep.Server.RFC5780 != Broken {
				t.Errorf("filtering %v, server %v %q", rep.Filtering, rep.Server.RFC5780, rep.Server.Problems)
			}
			if rep.Mapping != EndpointIndependent {
				t.Errorf("mapping %v; the alternate sockets answered, so it is measurable", rep.Mapping)
			}
		})
	}
}

func TestProbeHonoursContext(t *testing.T) {
	addr := startFake(t, func([]byte, netip.AddrPort, netip.AddrPort, netip.AddrPort) ([]byte, bool) { return nil, false })
	c := &Client{Servers: []string{addr.String()}, Timeout: time.Minute}
	ctx, cancel := contextWithTimeout(t, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Probe(ctx)
	if d := time.Since(start); d > time.Second {
		t.Errorf("probe took %v with a 300ms ctx", d)
	}
	if !errors.Is(err, ErrNoAnswer) {
		t.Errorf("err %v", err)
	}
}
