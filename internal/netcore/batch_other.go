//go:build !linux

package netcore

import (
	"net"
	"net/netip"
)

type batchSys struct{}

func (*batchSys) init(*net.UDPConn) {}

func (*batchSys) read(b *BatchConn, ds []Datagram) (int, error) {
	n, addr, err := b.c.ReadFromUDPAddrPort(ds[0].Buf)
	if err != nil {
		return 0, err
	}
	ds[0].N, ds[0].Addr, ds[0].Local = n, Canonical(addr), b.bound
	return 1, nil
}

func (*batchSys) write(b *BatchConn, ds []Datagram) error {
	var errs []error
	for _, d := range ds {
		if _, err := b.c.WriteToUDPAddrPort(d.Buf, d.Addr); err != nil {
			errs = append(errs, err)
		}
	}
	return Join(errs...)
}

func (*batchSys) writeTo(b *BatchConn, p []byte, dst netip.AddrPort) error {
	_, err := b.c.WriteToUDPAddrPort(p, dst)
	return err
}
