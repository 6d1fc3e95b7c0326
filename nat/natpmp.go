package nat

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// NAT-PMP (RFC 6886) wire format.
const (
	natpmpVersion      = 0
	natpmpOpExternal   = 0
	natpmpOpMapUDP     = 1
	natpmpOpMapTCP     = 2
	natpmpResponseBit  = 0x80
	natpmpExternalLen  = 12
	natpmpMapLen       = 16
	natpmpResultOK     = 0
	natpmpHeaderMinLen = 8 // version, opcode, result, epoch: all a reply needs to refuse
)

// natpmpResultName names NAT-PMP result codes (RFC 6886, section 3.5).
func natpmpResultName(code uint16) string {
	switch code {
	case 0:
		return "Success"
	case 1:
		return "Unsupported Version"
	case 2:
		return "Not Authorized/Refused"
	case 3:
		return "Network Failure"
	case 4:
		return "Out of resources"
	case 5:
		return "Unsupported opcode"
	}
	return fmt.Sprintf("result %d", code)
}

// natpmpResponse is a parsed NAT-PMP response.
type natpmpResponse struct {
	opcode uint8 // without the response bit
	result uint16
	epoch  uint32
	// external address response
	external netip.Addr
	// mapping response
	internalPort, externalPort uint16
	lifetime                   uint32
}

// parseNATPMPResponse parses a NAT-PMP response. A refusal may be cut
// short after the epoch (some routers send only that much).
func parseNATPMPResponse(b []byte) (natpmpResponse, error) {
	var r natpmpResponse
	if len(b) < natpmpHeaderMinLen {
		return r, fmt.Errorf("nat-pmp: response of %d bytes", len(b))
	}
	if b[0] != natpmpVersion {
		return r, fmt.Errorf("nat-pmp: version %d", b[0])
	}
	if b[1]&natpmpResponseBit == 0 {
		return r, fmt.Errorf("nat-pmp: a request, not a response")
	}
	r.opcode = b[1] &^ natpmpResponseBit
	r.result = binary.BigEndian.Uint16(b[2:4])
	r.epoch = binary.BigEndian.Uint32(b[4:8])
	if r.result != natpmpResultOK {
		return r, nil
	}
	switch r.opcode {
	case natpmpOpExternal:
		if len(b) < natpmpExternalLen {
			return r, fmt.Errorf("nat-pmp: external address response of %d bytes", len(b))
		}
		r.external = netip.AddrFrom4([4]byte(b[8:12]))
	case natpmpOpMapUDP, natpmpOpMapTCP:
		if len(b) < natpmpMapLen {
			return r, fmt.Errorf("nat-pmp: mapping response of %d bytes", len(b))
		}
		r.internalPort = binary.BigEndian.Uint16(b[8:10])
		r.externalPort = binary.BigEndian.Uint16(b[10:12])
		r.lifetime = binary.BigEndian.Uint32(b[12:16])
	default:
		return r, fmt.Errorf("nat-pmp: unknown opcode %d", r.opcode)
	}
	return r, nil
}

// marshal encodes r as a server would; tests and the fuzz target use it.
func (r natpmpResponse) marshal() []byte {
	n := natpmpMapLen
	if r.opcode == natpmpOpExternal {
		n = natpmpExternalLen
	}
	if r.result != natpmpResultOK {
		n = natpmpHeaderMinLen
	}
	b := make([]byte, n)
	b[1] = r.opcode | natpmpResponseBit
	binary.BigEndian.PutUint16(b[2:4], r.result)
	binary.BigEndian.PutUint32(b[4:8], r.epoch)
	if r.result != natpmpResultOK {
		return b
	}
	if r.opcode == natpmpOpExternal {
		a := r.external
		if !a.Is4() {
			a = netip.IPv4Unspecified()
		}
		v := a.As4()
		copy(b[8:12], v[:])
		return b
	}
	binary.BigEndian.PutUint16(b[8:10], r.internalPort)
	binary.BigEndian.PutUint16(b[10:12], r.externalPort)
	binary.BigEndian.PutUint32(b[12:16], r.lifetime)
	return b
}

func natpmpOp(t Transport) uint8 {
	if t == TransportTCP {
		return natpmpOpMapTCP
	}
	return natpmpOpMapUDP
}

// natpmpExternal asks for the gateway's external address.
func (m *PortMapper) natpmpExternal(ctx context.Context, gw netip.Addr) (netip.Addr, error) {
	var ext netip.Addr
	err := m.exchange(ctx, gw, []byte{natpmpVersion, natpmpOpExternal}, func(b []byte) (bool, error) {
		r, err := parseNATPMPResponse(b)
		if err != nil {
			return false, nil // e.g. a PCP reply to an earlier request
		}
		if r.opcode != natpmpOpExternal {
			return false, nil
		}
		m.observeEpoch(PortMapNATPMP, gw, r.epoch)
		if r.result != natpmpResultOK {
			return true, &PortMapError{Protocol: PortMapNATPMP, Code: int(r.result), Reason: natpmpResultName(r.result)}
		}
		ext = r.external
		return true, nil
	})
	return ext, err
}

// natpmpMap creates, renews or (lifetime 0, external 0) deletes a mapping.
func (m *PortMapper) natpmpMap(ctx context.Context, gw, local netip.Addr, t Transport, internal, external uint16, lifetime time.Duration) (Mapping, error) {
	secs := uint32(0)
	if lifetime > 0 {
		secs = lifetimeSeconds(lifetime)
	}
	req := make([]byte, 12)
	req[0] = natpmpVersion
	req[1] = natpmpOp(t)
	binary.BigEndian.PutUint16(req[4:6], internal)
	binary.BigEndian.PutUint16(req[6:8], external)
	binary.BigEndian.PutUint32(req[8:12], secs)
	var got Mapping
	err := m.exchange(ctx, gw, req, func(b []byte) (bool, error) {
		r, err := parseNATPMPResponse(b)
		if err != nil {
			return false, nil
		}
		if r.opcode != natpmpOp(t) {
			return false, nil
		}
		m.observeEpoch(PortMapNATPMP, gw, r.epoch)
		if r.result != natpmpResultOK {
			return true, &PortMapError{Protocol: PortMapNATPMP, Code: int(r.result), Reason: natpmpResultName(r.result)}
		}
		if r.internalPort != internal {
			return false, nil
		}
		got = Mapping{
			Protocol:  PortMapNATPMP,
			Transport: t,
			Internal:  netip.AddrPortFrom(local, internal),
			External:  netip.AddrPortFrom(netip.Addr{}, r.externalPort),
			Lifetime:  time.Duration(r.lifetime) * time.Second,
		}
		return true, nil
	})
	if err != nil || lifetime == 0 {
		return got, err
	}
	// The mapping response carries no address: ask for it.
	if ext, err := m.natpmpExternal(ctx, gw); err == nil && !ext.IsUnspecified() {
		got.External = netip.AddrPortFrom(ext, got.External.Port())
	}
	return got, nil
}

func (m *PortMapper) natpmpDelete(ctx context.Context, gw netip.Addr, t Transport, internal uint16) error {
	_, err := m.natpmpMap(ctx, gw, netip.Addr{}, t, internal, 0, 0)
	return err
}
