package netcore

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is the kernel's struct mmsghdr; Go pads it as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// batchMax bounds one system call; larger batches are split.
const batchMax = 64

// cmsgRoom is enough for one IP_PKTINFO and one IPV6_PKTINFO message.
var cmsgRoom = unix.CmsgSpace(unix.SizeofInet4Pktinfo) + unix.CmsgSpace(unix.SizeofInet6Pktinfo)

type batchSys struct {
	rc      syscall.RawConn
	family  int // AF_INET or AF_INET6, of the socket
	pktinfo bool

	// the reader's scratch; rfn is recvmmsg for rc.Read, bound once so
	// that a read allocates nothing
	rfn   func(fd uintptr) bool
	rn    int // datagrams to read
	rgot  int
	rerr  syscall.Errno
	rh    [batchMax]mmsghdr
	riov  [batchMax]unix.Iovec
	rname [batchMax]unix.RawSockaddrInet6
	roob  []byte // batchMax × cmsgRoom

	// the writer's scratch; wfn is sendmmsg of wh[wfirst:wk] for rc.Write
	wfn    func(fd uintptr) bool
	wfirst int
	wk     int
	wsent  int
	werr   syscall.Errno
	wh     [batchMax]mmsghdr
	wiov   [batchMax]unix.Iovec
	wname  [batchMax]unix.RawSockaddrInet6
	woob   []byte
}

func (s *batchSys) init(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	s.rc = rc
	s.rfn, s.wfn = s.recvmmsg, s.sendmmsg
	s.roob = make([]byte, batchMax*cmsgRoom)
	s.woob = make([]byte, batchMax*cmsgRoom)
	_ = rc.Control(func(fd uintptr) {
		s.family, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		// The destination of each datagram: IP_PKTINFO for IPv4 ones (on
		// an IPv4 socket, and on a dual-stack IPv6 socket for mapped
		// peers), IPV6_PKTINFO for IPv6 ones.
		e4 := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		switch s.family {
		case unix.AF_INET:
			s.pktinfo = e4 == nil
		case unix.AF_INET6:
			s.pktinfo = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1) == nil
		}
	})
}

func (s *batchSys) read(b *BatchConn, ds []Datagram) (int, error) {
	if s.rc == nil || (s.family != unix.AF_INET && s.family != unix.AF_INET6) {
		return readOne(b, ds)
	}
	n := min(len(ds), batchMax)
	for i := range n {
		buf := ds[i].Buf
		if len(buf) == 0 {
			n = i
			break
		}
		s.riov[i] = unix.Iovec{Base: &buf[0]}
		s.riov[i].SetLen(len(buf))
		h := &s.rh[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&s.rname[i])), Namelen: unix.SizeofSockaddrInet6, Iov: &s.riov[i]}
		h.SetIovlen(1)
		if s.pktinfo {
			h.Control = &s.roob[i*cmsgRoom]
			h.SetControllen(cmsgRoom)
		}
	}
	if n == 0 {
		return 0, nil
	}
	s.rn = n
	if err := s.rc.Read(s.rfn); err != nil {
		return 0, err
	}
	got := s.rgot
	if s.rerr != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Source: b.c.LocalAddr(), Err: s.rerr}
	}
	for i := range got {
		d := &ds[i]
		d.N = int(s.rh[i].n)
		d.Addr = sockaddrPort(&s.rname[i])
		d.Local = b.bound
		if s.pktinfo {
			if l, ok := pktinfoDst(s.roob[i*cmsgRoom : i*cmsgRoom+int(s.rh[i].hdr.Controllen)]); ok {
				d.Local = l
			}
		}
	}
	return got, nil
}

// recvmmsg reads up to rn datagrams without blocking; false asks rc.Read
// to wait until the socket is readable.
func (s *batchSys) recvmmsg(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.rh[0])), uintptr(s.rn), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	s.rgot, s.rerr = int(r), e
	return true
}

// sendmmsg sends wh[wfirst:wk] without blocking; false asks rc.Write to
// wait until the socket is writable.
func (s *batchSys) sendmmsg(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.wh[s.wfirst])), uintptr(s.wk-s.wfirst), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	s.wsent, s.werr = int(r), e
	return true
}

// readOne is the fallback of a socket that is neither IPv4 nor IPv6.
func readOne(b *BatchConn, ds []Datagram) (int, error) {
	n, addr, err := b.c.ReadFromUDPAddrPort(ds[0].Buf)
	if err != nil {
		return 0, err
	}
	ds[0].N, ds[0].Addr, ds[0].Local = n, Canonical(addr), b.bound
	return 1, nil
}

func (s *batchSys) write(b *BatchConn, ds []Datagram) error {
	if s.rc == nil || (s.family != unix.AF_INET && s.family != unix.AF_INET6) {
		var errs []error
		for _, d := range ds {
			if _, err := b.c.WriteToUDPAddrPort(d.Buf, d.Addr); err != nil {
				errs = append(errs, err)
			}
		}
		return Join(errs...)
	}
	var errs []error
	for len(ds) > 0 {
		n := min(len(ds), batchMax)
		k := 0 // headers filled; a datagram that cannot be addressed is refused here
		first := 0
		for i := range n {
			d := &ds[i]
			nl, err := s.sockaddr(&s.wname[k], d.Addr)
			if err != nil {
				errs = append(errs, &net.OpError{Op: "write", Net: "udp", Addr: UDPAddr(d.Addr), Err: err})
				continue
			}
			if len(d.Buf) > 0 {
				s.wiov[k] = unix.Iovec{Base: &d.Buf[0]}
			} else {
				s.wiov[k] = unix.Iovec{}
			}
			s.wiov[k].SetLen(len(d.Buf))
			h := &s.wh[k].hdr
			*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&s.wname[k])), Namelen: nl, Iov: &s.wiov[k]}
			h.SetIovlen(1)
			if cl := s.source(s.woob[k*cmsgRoom:(k+1)*cmsgRoom], b.bound, d.Local); cl > 0 {
				h.Control = &s.woob[k*cmsgRoom]
				h.SetControllen(cl)
			}
			k++
		}
		for first < k {
			s.wfirst, s.wk = first, k
			if err := s.rc.Write(s.wfn); err != nil {
				return Join(append(errs, err)...)
			}
			sent := s.wsent
			if s.werr != 0 {
				// The first datagram was refused: report it, skip it.
				errs = append(errs, &net.OpError{Op: "write", Net: "udp", Source: b.c.LocalAddr(), Err: s.werr})
				sent = 1
			}
			first += sent
		}
		ds = ds[n:]
	}
	return Join(errs...)
}

// sockaddr writes dst in the socket's family into sa and returns its length.
func (s *batchSys) sockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) (uint32, error) {
	a := dst.Addr()
	if !a.IsValid() {
		return 0, errors.New("no destination address")
	}
	if s.family == unix.AF_INET {
		a = a.Unmap()
		if !a.Is4() {
			return 0, errors.New("IPv6 destination on an IPv4 socket")
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], dst.Port())
		return unix.SizeofSockaddrInet4, nil
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], dst.Port())
	if z := a.Zone(); z != "" {
		if id, err := strconv.ParseUint(z, 10, 32); err == nil {
			sa.Scope_id = uint32(id)
		} else if ifi, err := net.InterfaceByName(z); err == nil {
			sa.Scope_id = uint32(ifi.Index)
		}
	}
	return unix.SizeofSockaddrInet6, nil
}

// source writes the control message choosing src as the source address
// into oob and returns its length, or 0 when the kernel should choose (a
// socket bound to one address, or no source given).
func (s *batchSys) source(oob []byte, bound, src netip.Addr) int {
	if !s.pktinfo || !bound.IsUnspecified() || !src.IsValid() || src.IsUnspecified() {
		return 0
	}
	src = src.Unmap()
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if src.Is4() {
		// IPv4 replies, also on a dual-stack socket (the kernel's IPv4
		// path), take IP_PKTINFO.
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
		*pi = unix.Inet4Pktinfo{Spec_dst: src.As4()}
		return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	}
	if s.family != unix.AF_INET6 {
		return 0
	}
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	*pi = unix.Inet6Pktinfo{Addr: src.As16()}
	return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
}

// sockaddrPort reads a source address the kernel wrote, IPv4-mapped ones
// unmapped.
func sockaddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, port)
	}
	return netip.AddrPort{}
}

// pktinfoDst finds the destination address in the control messages of one
// datagram: IP_PKTINFO or IPV6_PKTINFO. It reads only inside oob.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	hl := unix.CmsgLen(0)
	for len(oob) >= hl {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hl || l > len(oob) {
			return netip.Addr{}, false
		}
		data := oob[hl:l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom4(pi.Addr), true
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom16(pi.Addr).Unmap(), true
		}
		next := unix.CmsgSpace(l - hl)
		if next > len(oob) {
			return netip.Addr{}, false
		}
		oob = oob[next:]
	}
	return netip.Addr{}, false
}

// sendScratch is one WriteTo's state, pooled so that concurrent writers
// allocate nothing: the destination and the bound sendto call.
type sendScratch struct {
	sa    unix.RawSockaddrInet6
	salen uint32
	p     []byte
	err   syscall.Errno
	fn    func(fd uintptr) bool
}

// sendScratches is a free list of sendScratch. It is a channel, not a
// sync.Pool: a Pool under the race detector drops a quarter of what is put
// back, and a write must not allocate (TestChannelDataAllocs).
var sendScratches = make(chan *sendScratch, 64)

func getSendScratch() *sendScratch {
	select {
	case x := <-sendScratches:
		return x
	default:
		x := new(sendScratch)
		x.fn = x.sendto
		return x
	}
}

func putSendScratch(x *sendScratch) {
	x.p = nil
	select {
	case sendScratches <- x:
	default: // more writers at once than the list holds: let it go
	}
}

func (x *sendScratch) sendto(fd uintptr) bool {
	var base unsafe.Pointer
	if len(x.p) > 0 {
		base = unsafe.Pointer(&x.p[0])
	}
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(base), uintptr(len(x.p)), unix.MSG_DONTWAIT,
		uintptr(unsafe.Pointer(&x.sa)), uintptr(x.salen))
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	x.err = e
	return true
}

func (s *batchSys) writeTo(b *BatchConn, p []byte, dst netip.AddrPort) error {
	if s.rc == nil || (s.family != unix.AF_INET && s.family != unix.AF_INET6) {
		_, err := b.c.WriteToUDPAddrPort(p, dst)
		return err
	}
	x := getSendScratch()
	defer putSendScratch(x)
	nl, err := s.sockaddr(&x.sa, dst)
	if err != nil {
		return &net.OpError{Op: "write", Net: "udp", Addr: UDPAddr(dst), Err: err}
	}
	x.salen, x.p, x.err = nl, p, 0
	if err := s.rc.Write(x.fn); err != nil {
		return err
	}
	if x.err != 0 {
		return &net.OpError{Op: "write", Net: "udp", Source: b.c.LocalAddr(), Addr: UDPAddr(dst), Err: x.err}
	}
	return nil
}
