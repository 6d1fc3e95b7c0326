package dnssplit

import (
	"context"
	"encoding/binary"
	"net/netip"

	"github.com/miekg/dns"
)

// handle answers one raw query; nil means send nothing.
func (s *Server) handle(ctx context.Context, b []byte, src netip.AddrPort, local netip.Addr, tcp bool) []byte {
	out, _ := s.handlePass(ctx, b, src, local, tcp, pass{})
	return out
}

// handlePass is handle with the UDP path's per-query state.
func (s *Server) handlePass(ctx context.Context, b []byte, src netip.AddrPort, local netip.Addr, tcp bool, ps pass) ([]byte, outcome) {
	if !tcp {
		if out, oc, ok := s.cachedReply(b, src, local, &ps, ps.reply); ok {
			return out, oc
		}
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		s.stats.malformed.Add(1)
		// Answer FORMERR when at least the header is readable and the
		// packet is a query; otherwise drop.
		var h dns.Msg
		if len(b) < 12 || b[2]&0x80 != 0 {
			return nil, outcome{}
		}
		h.Id = binary.BigEndian.Uint16(b)
		h.Response = true
		h.Opcode = int(b[2]>>3) & 0xF
		h.Rcode = dns.RcodeFormatError
		out, _ := h.Pack()
		return out, outcome{}
	}
	if req.IsTsig() != nil {
		return s.handleSigned(ctx, b, req, src, local, tcp, ps)
	}
	m, oc := s.resolve(ctx, req, Client{Source: src.Addr(), Local: local}, tcp, ps)
	if m == nil {
		return nil, oc
	}
	out, err := m.Pack()
	if err != nil {
		s.logger().Debug("dnssplit: pack reply", "err", err)
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		out, _ = m.Pack()
		return out, oc
	}
	if !tcp && oc.static {
		s.storeAnswer(b, out, oc)
	}
	return out, oc
}
