package nat

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// errNoDefaultRoute is returned when the routing table has no IPv4 default
// route through a gateway.
var errNoDefaultRoute = errors.New("no IPv4 default route via a gateway")

// defaultGateway returns the gateway of the IPv4 default route, read from
// /proc/thread-self/net/route (Linux): the calling thread's network
// namespace, which /proc/net (the main thread's) need not be. Elsewhere,
// set PortMapper.Gateway.
func defaultGateway() (netip.Addr, error) {
	f, err := os.Open("/proc/thread-self/net/route")
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.Open("/proc/net/route") // kernels before 3.17
	}
	if err != nil {
		return netip.Addr{}, err
	}
	defer f.Close()
	return parseProcRoute(f)
}

// parseProcRoute returns the gateway of the lowest-metric IPv4 default route
// (destination and mask 0, flags RTF_UP|RTF_GATEWAY) in /proc/net/route
// format: a header line, then whitespace-separated fields with addresses in
// the kernel's byte order (little-endian hex on the usual machines).
func parseProcRoute(r io.Reader) (netip.Addr, error) {
	const (
		rtfUp      = 0x1
		rtfGateway = 0x2
	)
	sc := bufio.NewScanner(r)
	first := true
	var best netip.Addr
	bestMetric := uint64(1<<64 - 1)
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		dst, err1 := hexAddr(f[1])
		gw, err2 := hexAddr(f[2])
		flags, err3 := strconv.ParseUint(f[3], 16, 32)
		metric, err4 := strconv.ParseUint(f[6], 10, 64)
		mask, err5 := hexAddr(f[7])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
			continue
		}
		if !dst.IsUnspecified() || !mask.IsUnspecified() || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway || gw.IsUnspecified() {
			continue
		}
		if metric < bestMetric {
			best, bestMetric = gw, metric
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, err
	}
	if !best.IsValid() {
		return netip.Addr{}, errNoDefaultRoute
	}
	return best, nil
}

// hexAddr decodes an IPv4 address as /proc/net/route writes it: 8 hex
// digits of the 32-bit value loaded from network-order memory in host byte
// order (reversed on little-endian machines).
func hexAddr(s string) (netip.Addr, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 {
		return netip.Addr{}, fmt.Errorf("bad address %q", s)
	}
	var a [4]byte
	binary.NativeEndian.PutUint32(a[:], binary.BigEndian.Uint32(b))
	return netip.AddrFrom4(a), nil
}
