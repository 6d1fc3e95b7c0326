package dnssplit

import (
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// packetIO reads queries with the address they arrived on and writes replies
// from that same address, so a multi-homed host (or one listening on the
// unspecified address) answers from the address the client asked.
//
// readBatch and writeBatch move several datagrams per system call where the
// platform allows (recvmmsg/sendmmsg on Linux). Each is called by one
// goroutine at a time (one reader, one writer per socket).
type packetIO interface {
	readBatch(ps []*packet) (int, error)
	writeBatch(ps []*packet) error
}

// packet is one datagram: a query read into buf[:n], then its reply in out.
type packet struct {
	buf   []byte
	n     int
	src   netip.AddrPort
	local netip.Addr
	out   []byte
	// charged reports that the rate limit was already applied (on the
	// reader's inline pass) and must not be applied again.
	charged bool
}

// batchSize is how many datagrams one system call moves at most: enough to
// amortize the call under load, small enough to keep buffers modest (32 × 4 KiB).
const batchSize = 32

func newPacketIO(c net.PacketConn) packetIO {
	bound := netip.Addr{}
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		bound = ua.AddrPort().Addr().Unmap()
	}
	p := plainIO{c: c, bound: bound}
	if _, ok := c.(*net.UDPConn); !ok || !bound.IsValid() {
		return p
	}
	if bound.Is4() {
		pc := ipv4.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv4.FlagDst, true); err == nil {
			return newBatchIO(pc, p, len(ipv4.NewControlMessage(ipv4.FlagDst)))
		}
		return p
	}
	pc := ipv6.NewPacketConn(c)
	if err := pc.SetControlMessage(ipv6.FlagDst, true); err == nil {
		// A dual-stack socket also needs IPv4 destinations; failing that we
		// still learn IPv6 ones.
		_ = ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst, true)
		// Room for both: IPv4 datagrams on a dual-stack socket carry
		// IP_PKTINFO, IPv6 ones IPV6_PKTINFO.
		return newBatchIO(pc, p, len(ipv6.NewControlMessage(ipv6.FlagDst))+len(ipv4.NewControlMessage(ipv4.FlagDst)))
	}
	return p
}

type plainIO struct {
	c     net.PacketConn
	bound netip.Addr
}

func (p plainIO) read(b []byte) (int, netip.AddrPort, netip.Addr, error) {
	n, a, err := p.c.ReadFrom(b)
	return n, netcore.AddrPort(a), p.bound, err
}

func (p plainIO) write(b []byte, dst netip.AddrPort, _ netip.Addr) error {
	_, err := p.c.WriteTo(b, net.UDPAddrFromAddrPort(dst))
	return err
}

func (p plainIO) readBatch(ps []*packet) (int, error) {
	pk := ps[0]
	var err error
	pk.n, pk.src, pk.local, err = p.read(pk.buf)
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (p plainIO) writeBatch(ps []*packet) error {
	var errs []error
	for _, pk := range ps {
		if err := p.write(pk.out, pk.src, pk.local); err != nil {
			errs = append(errs, err)
		}
	}
	return netcore.Join(errs...)
}

// batchWriter sends ms with WriteBatch, skipping a datagram the kernel
// refuses so that one bad destination does not drop the rest.
func batchWriter(ms []ipv4.Message, write func([]ipv4.Message) (int, error)) error {
	var errs []error
	for len(ms) > 0 {
		n, err := write(ms)
		if err != nil {
			errs = append(errs, err)
			if n <= 0 {
				n = 1
			}
		}
		ms = ms[n:]
	}
	return netcore.Join(errs...)
}

// batchConn is what batchIO needs of x/net's ipv4.PacketConn and
// ipv6.PacketConn: their Message types are one type, so both satisfy it.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// batchIO moves datagrams with recvmmsg/sendmmsg and the packet-info
// control messages of an IPv4 socket or an IPv6 (maybe dual-stack) one.
type batchIO struct {
	wmu   sync.Mutex // the reader and the writer goroutine both write
	pc    batchConn
	p     plainIO
	rms   []ipv4.Message      // reader's, reused
	wms   []ipv4.Message      // writer's, reused
	rcm6  ipv6.ControlMessage // reader's, reused: parsing must not allocate
	rcm4  ipv4.ControlMessage
	rbufs [][][]byte
	wbufs [][][]byte
}

func newBatchIO(pc batchConn, p plainIO, oob int) *batchIO {
	v := &batchIO{pc: pc, p: p, rms: make([]ipv4.Message, batchSize), wms: make([]ipv4.Message, batchSize),
		rbufs: make([][][]byte, batchSize), wbufs: make([][][]byte, batchSize)}
	for i := range v.rms {
		v.rms[i].OOB = make([]byte, oob)
		v.rbufs[i] = make([][]byte, 1)
		v.wbufs[i] = make([][]byte, 1)
	}
	return v
}

func (v *batchIO) readBatch(ps []*packet) (int, error) {
	ms := v.rms[:min(len(ps), len(v.rms))]
	for i := range ms {
		v.rbufs[i][0] = ps[i].buf
		ms[i].Buffers = v.rbufs[i]
		ms[i].OOB = ms[i].OOB[:cap(ms[i].OOB)]
	}
	n, err := v.pc.ReadBatch(ms, 0)
	if err != nil {
		return 0, err
	}
	for i := range n {
		pk := ps[i]
		pk.n, pk.src, pk.local = ms[i].N, netcore.AddrPort(ms[i].Addr), v.p.bound
		if ms[i].NN > 0 {
			pk.local = dstOf(ms[i].OOB[:ms[i].NN], v.p.bound, &v.rcm6, &v.rcm4)
		}
	}
	return n, nil
}

// dstOf parses the destination of a datagram: IPV6_PKTINFO for IPv6
// datagrams, IP_PKTINFO for IPv4 ones (on IPv4 and dual-stack sockets).
func dstOf(oob []byte, def netip.Addr, cm6 *ipv6.ControlMessage, cm4 *ipv4.ControlMessage) netip.Addr {
	if cm6.Parse(oob) == nil && cm6.Dst != nil {
		if d, ok := netip.AddrFromSlice(cm6.Dst); ok {
			return d.Unmap()
		}
	}
	if cm4.Parse(oob) == nil && cm4.Dst != nil {
		if d, ok := netip.AddrFromSlice(cm4.Dst); ok {
			return d.Unmap()
		}
	}
	return def
}

func (v *batchIO) writeBatch(ps []*packet) error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	ms := v.wms[:min(len(ps), len(v.wms))]
	for i := range ms {
		pk := ps[i]
		v.wbufs[i][0] = pk.out
		ms[i].Buffers = v.wbufs[i]
		ms[i].Addr = net.UDPAddrFromAddrPort(pk.src)
		ms[i].OOB = nil
		switch {
		case !v.p.bound.IsUnspecified() || !pk.local.IsValid() || pk.local.IsUnspecified():
		case pk.local.Is4():
			// IPv4 sockets, and IPv4 replies on a dual-stack socket (the
			// kernel's IPv4 path), take IP_PKTINFO; x/net's IPv6 message
			// would drop an IPv4-mapped source.
			ms[i].OOB = (&ipv4.ControlMessage{Src: pk.local.AsSlice()}).Marshal()
		default:
			ms[i].OOB = (&ipv6.ControlMessage{Src: pk.local.AsSlice()}).Marshal()
		}
	}
	return batchWriter(ms, func(ms []ipv4.Message) (int, error) { return v.pc.WriteBatch(ms, 0) })
}
