package dnssplit

import (
	"context"
	"encoding/binary"
	"net/netip"

	"github.com/miekg/dns"
)

// handle answers one raw query; nil means send nothing.
func (s *Server) handle(ctx context.Context, b []byte, src netip.AddrPort, local netip.Addr, tcp bool) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		s.stats.malformed.Add(1)
		// Answer FORMERR when at least the header is readable and the
		// packet is a query; otherwise drop.
		var h dns.Msg
		if len(b) < 12 || b[2]&0x80 != 0 {
			return nil
		}
		h.Id = binary.BigEndian.Uint16(b)
		h.Response = true
		h.Opcode = int(b[2]>>3) & 0xF
		h.Rcode = dns.RcodeFormatError
		out, _ := h.Pack()
		return out
	}
	m := s.Resolve(ctx, req, Client{Source: src.Addr(), Local: local}, tcp)
	if m == nil {
		return nil
	}
	out, err := m.Pack()
	if err != nil {
		s.logger().Debug("dnssplit: pack reply", "err", err)
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		out, _ = m.Pack()
	}
	return out
}
