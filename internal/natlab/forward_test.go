package natlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// serveRemote accepts connections on ln and writes each one's remote address
// back, until ln is closed. It returns a function that stops and waits.
func serveRemote(t *testing.T, ln net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, c.RemoteAddr().String())
			c.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// remoteSeen dials addr from host and returns the remote address the server
// saw.
func remoteSeen(ctx context.Context, lab *Lab, host Host, addr netip.AddrPort) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := lab.Dial(ctx, host, "tcp4", addr.String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.ParseAddrPort(string(b))
}

func TestForwards(t *testing.T) {
	for _, k := range []Kind{PortRestricted, OneToOne, AddressRestricted, Symmetric, UDPBlocked, NoNAT} {
		for _, hairpin := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/hairpin=%v", k, hairpin), func(t *testing.T) {
				t.Parallel()
				lab := New(t, Config{Kind: k, Hairpin: hairpin, Forwards: []Forward{
					{Proto: "tcp", Port: 443, To: LAN1, ToPort: 8443},
					{Proto: "udp", Port: 5353, To: LAN2},
				}})
				ln, err := lab.Listen(LAN1, "tcp4", ":8443")
				if err != nil {
					t.Fatal(err)
				}
				serveRemote(t, ln)
				router := lab.Addr(Router)
				pub := netip.AddrPortFrom(router, 443)

				// From the internet: forwarded, the source kept.
				got, err := remoteSeen(t.Context(), lab, Peer, pub)
				if err != nil {
					t.Fatalf("Peer to %v: %v", pub, err)
				}
				if got.Addr() != lab.Addr(Peer) {
					t.Errorf("LAN1 saw the Peer's connection from %v, want %v", got, lab.Addr(Peer))
				}

				// From the LAN: only with hairpinning, and then from the
				// public address so that replies go back through the router.
				got, err = remoteSeen(t.Context(), lab, LAN2, pub)
				switch {
				case hairpin && err != nil:
					t.Errorf("LAN2 to %v with hairpinning: %v", pub, err)
				case hairpin && got.Addr() != router:
					t.Errorf("hairpinned connection seen from %v, want the router's address %v", got, router)
				case !hairpin && err == nil:
					t.Errorf("LAN2 reached LAN1 through %v without hairpinning (seen from %v)", pub, got)
				}

				// UDP forward to LAN2, unless UDP is blocked.
				u, err := lab.ListenPacket(LAN2, "udp4", ":5353")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { u.Close() })
				p := udpListen(t, lab, Peer, netip.Addr{})
				if _, err := p.WriteTo([]byte("fwd"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(router, 5353))); err != nil {
					t.Fatal(err)
				}
				_, from, err := recv(u, quiet)
				switch {
				case k == UDPBlocked && err == nil:
					t.Errorf("UDP forwarded although UDP is blocked (from %v)", from)
				case k != UDPBlocked && err != nil:
					t.Errorf("UDP forward to LAN2: %v", err)
				case k != UDPBlocked && from.Addr() != lab.Addr(Peer):
					t.Errorf("UDP forward seen from %v, want %v", from, lab.Addr(Peer))
				}
			})
		}
	}
}
