package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/libp2p/go-reuseport"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

func (c *Client) dialTCP(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	if c.DialTCP != nil {
		return c.DialTCP(ctx, network, laddr, raddr)
	}
	d := net.Dialer{Control: reuseport.Control}
	if laddr != "" {
		la, err := net.ResolveTCPAddr(network, laddr)
		if err != nil {
			return nil, err
		}
		d.LocalAddr = la
	}
	return d.DialContext(ctx, network, raddr)
}

// probeTCP connects from one local port to the server's addresses (the RFC
// 5780 server's three, or every server that answered over UDP, or every
// server when none did) and compares the TCP mappings. When the first TCP
// answer carries a usable OTHER-ADDRESS that UDP did not provide, the
// alternate addresses are added.
func (c *Client) probeTCP(ctx context.Context, p plan, first []obs, servers []netip.AddrPort) *TCPReport {
	var dsts []netip.AddrPort
	if p.rfc >= 0 {
		dsts = append([]netip.AddrPort{p.primary}, p.mapping...)
	} else {
		for _, o := range first {
			if o.answered {
				dsts = append(dsts, o.server)
			}
		}
		if len(dsts) == 0 {
			dsts = servers
		}
	}
	extended := p.rfc >= 0
	network := "tcp4"
	if c.network() == "udp6" {
		network = "tcp6"
	}
	var rep *TCPReport
	for attempt := 0; attempt < tcpAttempts; attempt++ {
		var inUse bool
		rep, inUse = c.tcpRound(ctx, network, dsts, extended)
		if !inUse || ctx.Err() != nil {
			break
		}
	}
	return rep
}

// tcpAttempts bounds the retries when another socket without SO_REUSEPORT
// holds the chosen local port for some other destination (connect() shares
// ephemeral ports across destinations, so that can happen).
const tcpAttempts = 3

// tcpRound connects from one local port to every destination in turn. It
// reports whether a connection failed because the local port was taken.
func (c *Client) tcpRound(ctx context.Context, network string, dsts []netip.AddrPort, extended bool) (*TCPReport, bool) {
	dsts = slices.Clone(dsts)
	rep := &TCPReport{}
	// Bind explicitly to port 0 first: bind() picks a port no other socket
	// uses, where connect() alone may share one with other destinations.
	laddr := "0.0.0.0:0"
	if network == "tcp6" {
		laddr = "[::]:0"
	}
	var (
		bound bool
		inUse bool
		got   []obs
		conns []net.Conn
	)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for i := 0; i < len(dsts); i++ {
		dst := dsts[i]
		pr := Evidence{Test: TCPTest, Server: dst}
		o, cn, err := c.tcpBinding(ctx, network, laddr, dst)
		if cn != nil {
			conns = append(conns, cn)
			la := netcore.AddrPort(cn.LocalAddr())
			pr.Local = la
			if !bound {
				bound = true
				laddr = netip.AddrPortFrom(netip.IPv4Unspecified(), la.Port()).String()
				if network == "tcp6" {
					laddr = netip.AddrPortFrom(netip.IPv6Unspecified(), la.Port()).String()
				}
			}
		}
		pr.Sent = 1
		if err != nil {
			pr.Note = err.Error()
			inUse = inUse || errors.Is(err, syscall.EADDRINUSE)
		} else {
			pr.Answered, pr.Mapped, pr.From, pr.Origin, pr.Other = true, o.mapped, dst, o.origin, o.other
			got = append(got, o)
			if !extended && o.other.IsValid() && otherAddressProblem(dst, o.other) == "" {
				extended = true
				dsts = append(dsts[:i+1:i+1], netip.AddrPortFrom(o.other.Addr(), dst.Port()), o.other)
			}
			if !rep.Public.IsValid() {
				rep.Public = o.mapped
				rep.PortPreserved = answerOf(o.mapped.Port() == pr.Local.Port())
			}
		}
		rep.Probes = append(rep.Probes, pr)
		if !bound {
			// Without a first connection there is no local port to reuse.
			break
		}
	}
	rep.Mapping = mappingBehavior(got)
	return rep, inUse
}

// tcpBinding sends one Binding request over a new TCP connection from laddr.
func (c *Client) tcpBinding(ctx context.Context, network, laddr string, dst netip.AddrPort) (obs, net.Conn, error) {
	cn, err := c.dialTCP(ctx, network, laddr, dst.String())
	if err != nil {
		return obs{}, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = cn.SetDeadline(dl)
	} else {
		_ = cn.SetDeadline(time.Now().Add(c.timeout()))
	}
	// A cancelled ctx (not only its deadline) ends the exchange.
	stop := context.AfterFunc(ctx, func() { _ = cn.SetDeadline(time.Now()) })
	defer stop()
	req := request{txid: newTxID()}
	if _, err := cn.Write(req.encode()); err != nil {
		return obs{}, cn, fmt.Errorf("nat: tcp: %w", err)
	}
	hdr := make([]byte, 20)
	if _, err := io.ReadFull(cn, hdr); err != nil {
		return obs{}, cn, fmt.Errorf("nat: tcp: %w", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	if n > maxMessage {
		return obs{}, cn, errors.New("nat: tcp: oversized answer")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(cn, body); err != nil {
		return obs{}, cn, fmt.Errorf("nat: tcp: %w", err)
	}
	m, err := parseMessage(append(hdr, body...))
	if err != nil {
		return obs{}, cn, err
	}
	if m.txid != req.txid || !m.success {
		return obs{}, cn, errors.New("nat: tcp: answer does not match the request")
	}
	return obs{ran: true, answered: true, server: dst, mapped: m.mapped, origin: m.origin, other: m.other}, cn, nil
}
