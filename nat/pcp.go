package nat

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// PCP (RFC 6887) wire format, version 2.
const (
	pcpVersion       = 2
	pcpOpAnnounce    = 0
	pcpOpMap         = 1
	pcpResponseBit   = 0x80
	pcpHeaderLen     = 24
	pcpMapLen        = 36 // MAP opcode-specific data
	pcpMaxLen        = 1100
	pcpProtoTCP      = 6
	pcpProtoUDP      = 17
	pcpResultSuccess = 0
)

// errPCPVersion is returned when the server answers with a NAT-PMP (version
// 0) or other non-PCP version: it does not speak PCP version 2.
var errPCPVersion = errors.New("the server does not speak PCP version 2")

// pcpResultName names PCP result codes (RFC 6887, section 7.4).
func pcpResultName(code uint8) string {
	names := [...]string{"SUCCESS", "UNSUPP_VERSION", "NOT_AUTHORIZED", "MALFORMED_REQUEST",
		"UNSUPP_OPCODE", "UNSUPP_OPTION", "MALFORMED_OPTION", "NETWORK_FAILURE", "NO_RESOURCES",
		"UNSUPP_PROTOCOL", "USER_EX_QUOTA", "CANNOT_PROVIDE_EXTERNAL", "ADDRESS_MISMATCH",
		"EXCESSIVE_REMOTE_PEERS"}
	if int(code) < len(names) {
		return names[code]
	}
	return fmt.Sprintf("result %d", code)
}

// pcpResponse is a parsed PCP response. The MAP fields are set only for
// the MAP opcode with a full body.
type pcpResponse struct {
	opcode   uint8
	result   uint8
	lifetime uint32
	epoch    uint32

	hasMap       bool
	nonce        [12]byte
	proto        uint8
	internalPort uint16
	externalPort uint16
	externalIP   netip.Addr
}

// parsePCPResponse parses a PCP response: the common header, the MAP
// opcode's data, and the options (checked for length, otherwise ignored).
func parsePCPResponse(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) < 2 {
		return r, fmt.Errorf("pcp: response of %d bytes", len(b))
	}
	if b[0] != pcpVersion {
		return r, fmt.Errorf("pcp: version %d: %w", b[0], errPCPVersion)
	}
	if len(b) < pcpHeaderLen || len(b) > pcpMaxLen || len(b)%4 != 0 {
		return r, fmt.Errorf("pcp: response of %d bytes", len(b))
	}
	if b[1]&pcpResponseBit == 0 {
		return r, errors.New("pcp: a request, not a response")
	}
	r.opcode = b[1] &^ pcpResponseBit
	r.result = b[3]
	r.lifetime = binary.BigEndian.Uint32(b[4:8])
	r.epoch = binary.BigEndian.Uint32(b[8:12])
	rest := b[pcpHeaderLen:]
	if r.opcode == pcpOpMap {
		if len(rest) < pcpMapLen {
			if r.result == pcpResultSuccess {
				return r, fmt.Errorf("pcp: MAP response without its data (%d bytes)", len(b))
			}
			return r, nil // an error response may be just the header
		}
		r.hasMap = true
		copy(r.nonce[:], rest[:12])
		r.proto = rest[12]
		r.internalPort = binary.BigEndian.Uint16(rest[16:18])
		r.externalPort = binary.BigEndian.Uint16(rest[18:20])
		r.externalIP = netip.AddrFrom16([16]byte(rest[20:36])).Unmap()
		rest = rest[pcpMapLen:]
	}
	for len(rest) > 0 {
		if len(rest) < 4 {
			return r, errors.New("pcp: truncated option header")
		}
		n := int(binary.BigEndian.Uint16(rest[2:4]))
		padded := 4 + (n+3)&^3
		if padded > len(rest) {
			return r, fmt.Errorf("pcp: option %d of %d bytes overruns the response", rest[0], n)
		}
		rest = rest[padded:]
	}
	return r, nil
}

// marshal encodes r as a server would (no options); tests and the fuzz
// target use it.
func (r pcpResponse) marshal() []byte {
	n := pcpHeaderLen
	if r.hasMap {
		n += pcpMapLen
	}
	b := make([]byte, n)
	b[0] = pcpVersion
	b[1] = r.opcode | pcpResponseBit
	b[3] = r.result
	binary.BigEndian.PutUint32(b[4:8], r.lifetime)
	binary.BigEndian.PutUint32(b[8:12], r.epoch)
	if r.hasMap {
		m := b[pcpHeaderLen:]
		copy(m[:12], r.nonce[:])
		m[12] = r.proto
		binary.BigEndian.PutUint16(m[16:18], r.internalPort)
		binary.BigEndian.PutUint16(m[18:20], r.externalPort)
		ip := r.externalIP
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
		}
		s := pcpAddr16(ip)
		copy(m[20:36], s[:])
	}
	return b
}

// pcpAddr16 returns a as the 16 bytes PCP carries (IPv4-mapped for IPv4).
func pcpAddr16(a netip.Addr) [16]byte {
	if a.Is4() {
		v := a.As4()
		return [16]byte{10: 0xff, 11: 0xff, 12: v[0], 13: v[1], 14: v[2], 15: v[3]}
	}
	return a.As16()
}

// pcpRequest encodes a PCP request header (and, for MAP, its data).
func pcpRequest(op uint8, client netip.Addr, lifetime uint32, nonce [12]byte, proto uint8, internal, suggested uint16) []byte {
	n := pcpHeaderLen
	if op == pcpOpMap {
		n += pcpMapLen
	}
	b := make([]byte, n)
	b[0] = pcpVersion
	b[1] = op
	binary.BigEndian.PutUint32(b[4:8], lifetime)
	c := pcpAddr16(client)
	copy(b[8:24], c[:])
	if op == pcpOpMap {
		m := b[pcpHeaderLen:]
		copy(m[:12], nonce[:])
		m[12] = proto
		binary.BigEndian.PutUint16(m[16:18], internal)
		binary.BigEndian.PutUint16(m[18:20], suggested)
		// Suggested external address: "no preference" is the all-zeros
		// address of the family, ::ffff:0.0.0.0 for IPv4.
		z := pcpAddr16(netip.IPv4Unspecified())
		copy(m[20:36], z[:])
	}
	return b
}

func pcpProto(t Transport) uint8 {
	if t == TransportTCP {
		return pcpProtoTCP
	}
	return pcpProtoUDP
}

// lifetimeSeconds converts a lifetime to the 32-bit seconds PCP and
// NAT-PMP carry, at least one second.
func lifetimeSeconds(d time.Duration) uint32 {
	s := d / time.Second
	switch {
	case s < 1:
		return 1
	case s > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(s)
}

func randRead(b []byte) (int, error) { return rand.Read(b) }

// pcpAnnounce sends an ANNOUNCE to learn whether the gateway speaks PCP. It
// returns no external address: ANNOUNCE carries none.
func (m *PortMapper) pcpAnnounce(ctx context.Context, gw, local netip.Addr) (netip.Addr, error) {
	req := pcpRequest(pcpOpAnnounce, local, 0, [12]byte{}, 0, 0, 0)
	err := m.exchange(ctx, gw, req, func(b []byte) (bool, error) {
		r, err := parsePCPResponse(b)
		if err != nil {
			return errors.Is(err, errPCPVersion), err
		}
		if r.opcode != pcpOpAnnounce {
			return false, nil
		}
		m.observeEpoch(PortMapPCP, gw, r.epoch)
		if r.result != pcpResultSuccess {
			return true, &PortMapError{Protocol: PortMapPCP, Code: int(r.result), Reason: pcpResultName(r.result)}
		}
		return true, nil
	})
	return netip.Addr{}, err
}

// pcpMap creates, renews (same nonce) or, with lifetime 0, deletes a MAP.
func (m *PortMapper) pcpMap(ctx context.Context, gw, local netip.Addr, t Transport, internal, external uint16, lifetime time.Duration, nonce [12]byte) (Mapping, error) {
	secs := uint32(0)
	if lifetime > 0 {
		secs = lifetimeSeconds(lifetime)
	}
	req := pcpRequest(pcpOpMap, local, secs, nonce, pcpProto(t), internal, external)
	var got Mapping
	err := m.exchange(ctx, gw, req, func(b []byte) (bool, error) {
		r, err := parsePCPResponse(b)
		if err != nil {
			return errors.Is(err, errPCPVersion), err
		}
		if r.opcode != pcpOpMap {
			return false, nil
		}
		if r.hasMap && (r.nonce != nonce || r.proto != pcpProto(t) || r.internalPort != internal) {
			return false, nil // another request's answer
		}
		m.observeEpoch(PortMapPCP, gw, r.epoch)
		if r.result != pcpResultSuccess {
			return true, &PortMapError{Protocol: PortMapPCP, Code: int(r.result), Reason: pcpResultName(r.result)}
		}
		if !r.hasMap {
			return true, errors.New("pcp: success without MAP data")
		}
		got = Mapping{
			Protocol:  PortMapPCP,
			Transport: t,
			Internal:  netip.AddrPortFrom(local, internal),
			External:  netip.AddrPortFrom(r.externalIP, r.externalPort),
			Lifetime:  time.Duration(r.lifetime) * time.Second,
		}
		if r.externalIP.IsUnspecified() {
			got.External = netip.AddrPortFrom(netip.Addr{}, r.externalPort)
		}
		return true, nil
	})
	return got, err
}

func (m *PortMapper) pcpDelete(ctx context.Context, gw, local netip.Addr, t Transport, internal uint16, nonce [12]byte) error {
	_, err := m.pcpMap(ctx, gw, local, t, internal, 0, 0, nonce)
	return err
}

// Retransmission of PCP and NAT-PMP requests: RFC 6886 starts at 250 ms
// and doubles; RFC 6887 starts at 3 s, too slow for a probe of a router one
// hop away, so both use RFC 6886's schedule, capped at 2 s, within the
// exchange's ctx.
const (
	firstRetransmit = 250 * time.Millisecond
	maxRetransmit   = 2 * time.Second
)

// exchange sends req to gw's PCP/NAT-PMP port on a connected UDP socket and
// retransmits until accept takes a response (returns true) or ctx ends.
// accept's error is exchange's. Datagrams accept does not take are ignored.
func (m *PortMapper) exchange(ctx context.Context, gw netip.Addr, req []byte, accept func([]byte) (bool, error)) error {
	c, err := m.dial(ctx, "udp4", netip.AddrPortFrom(gw, pcpPort).String())
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, pcpMaxLen+4)
	rto := firstRetransmit
	var lastErr error
	for {
		if _, err := c.Write(req); err != nil {
			if ctx.Err() != nil {
				break
			}
			// ICMP port unreachable from an earlier send: nothing listens.
			lastErr = err
		}
		deadline := time.Now().Add(rto)
		if ctx.Err() == nil {
			_ = c.SetReadDeadline(deadline)
		}
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				if ctx.Err() != nil {
					break
				}
				lastErr = err
				// A refused read (ICMP) returns at once: wait out the rto.
				select {
				case <-ctx.Done():
				case <-time.After(time.Until(deadline)):
				}
				break
			}
			if ok, err := accept(buf[:n]); ok {
				return err
			}
		}
		if ctx.Err() != nil {
			break
		}
		rto = min(2*rto, maxRetransmit)
	}
	if lastErr != nil {
		return fmt.Errorf("no answer from %v: %w", netip.AddrPortFrom(gw, pcpPort), lastErr)
	}
	return fmt.Errorf("no answer from %v: %w", netip.AddrPortFrom(gw, pcpPort), ctx.Err())
}
