package netcore

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsg builds one control message as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestPktinfoDst(t *testing.T) {
	var pi4 unix.Inet4Pktinfo
	pi4.Addr = [4]byte{192, 0, 2, 7}
	pi4.Spec_dst = [4]byte{198, 51, 100, 1}
	b4 := unsafe.Slice((*byte)(unsafe.Pointer(&pi4)), unix.SizeofInet4Pktinfo)
	pi6 := unix.Inet6Pktinfo{Addr: netip.MustParseAddr("2001:db8::7").As16()}
	b6 := unsafe.Slice((*byte)(unsafe.Pointer(&pi6)), unix.SizeofInet6Pktinfo)
	other := cmsg(unix.SOL_SOCKET, unix.SO_TIMESTAMP, make([]byte, 16))
	for _, tc := range []struct {
		name string
		oob  []byte
		want string
	}{
		{"ipv4", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, b4), "192.0.2.7"},
		{"ipv6", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, b6), "2001:db8::7"},
		{"after another", append(append([]byte{}, other...), cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, b6)...), "2001:db8::7"},
		{"none", other, ""},
		{"short data", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, b4[:8]), ""},
		{"truncated", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, b4)[:10], ""},
		{"empty", nil, ""},
	} {
		got, ok := pktinfoDst(tc.oob)
		if (tc.want == "") == ok || ok && got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: pktinfoDst = %v, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

// FuzzPktinfoDst: no control-message bytes make the parser read outside
// them or panic.
func FuzzPktinfoDst(f *testing.F) {
	var pi4 unix.Inet4Pktinfo
	pi4.Addr = [4]byte{192, 0, 2, 7}
	f.Add(cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&pi4)), unix.SizeofInet4Pktinfo)))
	f.Add(cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, make([]byte, unix.SizeofInet6Pktinfo)))
	f.Add(cmsg(unix.SOL_SOCKET, unix.SO_TIMESTAMP, make([]byte, 16)))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The kernel's buffer is aligned; so is a copy.
		buf := make([]uint64, (len(b)+7)/8)
		oob := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(buf))), len(buf)*8)[:len(b)]
		copy(oob, b)
		if a, ok := pktinfoDst(oob); ok && !a.IsValid() {
			t.Fatalf("ok with an invalid address for %x", b)
		}
	})
}

// TestBatchConnAllocs: a read and a write allocate nothing.
func TestBatchConnAllocs(t *testing.T) {
	srv := listenUDP(t, "udp4", "127.0.0.1:0")
	client := listenUDP(t, "udp4", "127.0.0.1:0")
	b := NewBatchConn(srv)
	to := Canonical(srv.LocalAddr().(*net.UDPAddr).AddrPort())
	back := Canonical(client.LocalAddr().(*net.UDPAddr).AddrPort())
	rd := []Datagram{{Buf: make([]byte, 100)}}
	wd := []Datagram{{Buf: []byte("x"), Addr: back}}
	buf := make([]byte, 100)
	allocs := testing.AllocsPerRun(200, func() {
		client.WriteToUDPAddrPort([]byte("q"), to)
		if _, err := b.ReadBatch(rd); err != nil {
			t.Fatal(err)
		}
		if err := b.WriteBatch(wd); err != nil {
			t.Fatal(err)
		}
		client.ReadFromUDPAddrPort(buf)
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per read and write, want 0", allocs)
	}
}

// TestBatchConnOneAtATime: ReadFrom and WriteTo move single datagrams
// without allocating, and WriteTo is safe from many goroutines at once.
func TestBatchConnOneAtATime(t *testing.T) {
	srv := listenUDP(t, "udp", "[::]:0")
	client := listenUDP(t, "udp4", "127.0.0.1:0")
	b := NewBatchConn(srv)
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(srv.LocalAddr().(*net.UDPAddr).Port))
	back := Canonical(client.LocalAddr().(*net.UDPAddr).AddrPort())
	buf, cbuf := make([]byte, 100), make([]byte, 100)
	q, r := []byte("q"), []byte("r")
	allocs := testing.AllocsPerRun(200, func() {
		client.WriteToUDPAddrPort(q, to)
		n, from, err := b.ReadFrom(buf)
		if err != nil || n != 1 || from != back {
			t.Fatalf("ReadFrom = %d, %v, %v; want 1 from %v", n, from, err, back)
		}
		if err := b.WriteTo(r, from); err != nil {
			t.Fatal(err)
		}
		if n, _, err := client.ReadFromUDPAddrPort(cbuf); err != nil || string(cbuf[:n]) != "r" {
			t.Fatalf("reply %q, %v", cbuf[:n], err)
		}
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per ReadFrom and WriteTo, want 0", allocs)
	}
	// Fewer datagrams than the receive buffer holds (read after), so none
	// is lost to it.
	const writers, each = 8, 20
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if err := b.WriteTo(r, back); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range writers * each {
		if _, _, err := client.ReadFromUDPAddrPort(cbuf); err != nil {
			t.Fatalf("concurrent datagram %d of %d: %v", i, writers*each, err)
		}
	}
}
