package netcore

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

func TestListenBoth(t *testing.T) {
	for range 20 { // port 0: the same port on both, however busy TCP is
		pc, l, err := ListenBoth("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if u, tc := pc.LocalAddr().String(), l.Addr().String(); u != tc {
			t.Fatalf("udp %s and tcp %s differ", u, tc)
		}
		defer pc.Close()
		defer l.Close()
	}
	if _, _, err := ListenBoth("127.0.0.1"); err == nil {
		t.Fatal("an address without a port was accepted")
	}
	// A given port whose TCP side is taken is an error naming tcp, and
	// leaves the UDP port free again. (If the UDP port of that number is
	// taken too, by someone else, another TCP port is held.)
	for try := 0; ; try++ {
		held, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := held.Addr().String()
		_, _, err = ListenBoth(addr)
		if err != nil && strings.Contains(err.Error(), "listen udp") && try < 10 {
			held.Close()
			continue
		}
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "listen tcp") {
			t.Fatalf("ListenBoth(%s) with its TCP port held: %v", addr, err)
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("the UDP port stayed bound after the failure: %v", err)
		}
		pc.Close()
		held.Close()
		break
	}
}
