package natlab

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestSmoke(t *testing.T) {
	for _, k := range []Kind{NoNAT, PortRestricted} {
		t.Run(k.String(), func(t *testing.T) {
			lab := New(t, Config{Kind: k})
			pc, err := lab.ListenPacket(Server, "udp4", netip.AddrPortFrom(lab.Addr(Server), 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			c, err := lab.ListenPacket(LAN1, "udp4", ":0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.WriteTo([]byte("hi"), pc.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 10)
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			got := from.(*net.UDPAddr).AddrPort()
			t.Logf("server saw %v, LAN1 local %v", got, c.LocalAddr())
			if got.Addr() != lab.PublicAddr() {
				t.Errorf("source %v, want public %v", got.Addr(), lab.PublicAddr())
			}
		})
	}
}
