// Package netcoretest has the fault-injecting sockets that every serving
// package's EMFILE test uses (a listener and a packet socket whose first calls
// fail as a process out of file descriptors sees them fail), and Serve, the
// accept loop of the tests' small backends.
package netcoretest

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
)

// EMFILE is the error Accept returns when the process has no descriptor left,
// shaped exactly as the net package returns it.
func EMFILE(op, network string) error {
	return &net.OpError{Op: op, Net: network, Err: os.NewSyscallError(op, syscall.EMFILE)}
}

// Listener wraps l so that its first n Accept calls fail with EMFILE before
// any connection is taken from l. Failures counts them as they happen.
type Listener struct {
	net.Listener
	n        atomic.Int64
	Failures atomic.Int64
}

// NewListener returns l failing its first n Accepts with EMFILE.
func NewListener(l net.Listener, n int) *Listener {
	f := &Listener{Listener: l}
	f.n.Store(int64(n))
	return f
}

// Accept fails with EMFILE while failures remain, then accepts from l.
func (f *Listener) Accept() (net.Conn, error) {
	if f.n.Add(-1) >= 0 {
		f.Failures.Add(1)
		return nil, EMFILE("accept", f.Addr().Network())
	}
	return f.Listener.Accept()
}

// PacketConn wraps pc so that its first n ReadFrom calls fail with EMFILE
// (as a receive that needs a descriptor for ancillary data does) before any
// datagram is read. Failures counts them.
type PacketConn struct {
	net.PacketConn
	n        atomic.Int64
	Failures atomic.Int64
}

// NewPacketConn returns pc failing its first n reads with EMFILE.
func NewPacketConn(pc net.PacketConn, n int) *PacketConn {
	f := &PacketConn{PacketConn: pc}
	f.n.Store(int64(n))
	return f
}

// ReadFrom fails with EMFILE while failures remain, then reads from pc.
func (f *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if f.n.Add(-1) >= 0 {
		f.Failures.Add(1)
		return 0, nil, EMFILE("read", f.LocalAddr().Network())
	}
	return f.PacketConn.ReadFrom(b)
}
