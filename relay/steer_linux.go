package relay

import (
	"fmt"
	"net"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// skfNetOff is SKF_NET_OFF: classic BPF loads at this (negative) offset read
// the network header instead of the packet data.
const skfNetOff = 0xfff00000 // -0x100000 as a uint32

// steerBySource makes the kernel deliver every datagram from one client IP
// address to the same socket of a SO_REUSEPORT group of n sockets, whatever
// the client's port. Each socket has its own engine with its own allocation
// table, and a client host's allocations belong together: coturn's
// turnutils_uclient, for one, reserves an even/odd port pair with
// EVEN-PORT and claims the second port with RESERVATION-TOKEN from another
// local port; with the kernel's default 4-tuple hash that second Allocate
// reached an engine that had never heard of the token (508). The program
// returns (last 32 bits of the source address) mod n, the index of the
// socket in the group (sockets join in the order they were bound).
func steerBySource(pc net.PacketConn, n int) error {
	if n < 2 {
		return nil
	}
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: skfNetOff, Size: 1},            // first byte of the IP header
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},   // version
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 2}, // IPv6?
		bpf.LoadAbsolute{Off: skfNetOff + 12, Size: 4},       // IPv4 source address
		bpf.Jump{Skip: 1},
		bpf.LoadAbsolute{Off: skfNetOff + 20, Size: 4}, // IPv6 source, last 32 bits
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)},
		bpf.RetA{},
	})
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return fmt.Errorf("relay: steer: %T is not a UDP socket", pc)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]})
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("relay: steer clients by address: %w", err)
	}
	return nil
}
