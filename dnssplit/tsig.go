package dnssplit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// TSIG (RFC 8945) on queries: a signed query is verified with the keys of
// Transfer.TSIG and its reply is signed with the same key (secondaries
// check the reply to their signed SOA query before they transfer). A
// query signed with a key we do not know gets NOTAUTH with a TSIG error
// record BADKEY, a wrong MAC BADSIG (both unsigned, as the RFC says), a
// time outside the fudge BADTIME (signed, with our time in Other Data).

// tsigFudge is the time difference allowed between signer and verifier:
// 300 s, the value RFC 8945 section 10 recommends.
const tsigFudge = 300

// tsigAlgorithm reports whether alg is accepted: the HMACs of RFC 8945
// section 6 that miekg/dns implements, HMAC-MD5 excepted (deprecated).
func tsigAlgorithm(alg string) bool {
	switch dns.CanonicalName(alg) {
	case dns.HmacSHA1, dns.HmacSHA224, dns.HmacSHA256, dns.HmacSHA384, dns.HmacSHA512:
		return true
	}
	return false
}

// tsigState is what checking a query's TSIG found, and what signing the
// reply needs.
type tsigState struct {
	key, alg   string // key name and algorithm, as the query gave them
	secret     string // base64 secret; empty when the key is unknown
	mac        string // the request MAC, hex
	timeSigned uint64
	err        uint16 // 0, dns.RcodeBadKey, dns.RcodeBadSig or dns.RcodeBadTime
}

func (s *Server) tsigSecret(name string) (string, bool) {
	if s.Transfer == nil {
		return "", false
	}
	for k, v := range s.Transfer.TSIG {
		if strings.EqualFold(dns.Fqdn(k), name) {
			return v, true
		}
	}
	return "", false
}

// checkTSIG verifies the TSIG of raw (the query req as received); req must
// carry one.
func (s *Server) checkTSIG(raw []byte, req *dns.Msg) tsigState {
	t := req.IsTsig()
	st := tsigState{key: t.Hdr.Name, alg: t.Algorithm, mac: t.MAC, timeSigned: t.TimeSigned}
	sec, ok := s.tsigSecret(t.Hdr.Name)
	if !ok || !tsigAlgorithm(t.Algorithm) {
		st.err = dns.RcodeBadKey
		return st
	}
	st.secret = sec
	switch err := dns.TsigVerify(raw, sec, "", false); {
	case err == nil:
	case errors.Is(err, dns.ErrTime):
		st.err = dns.RcodeBadTime
	default:
		st.err = dns.RcodeBadSig
	}
	return st
}

// sign packs m with a TSIG record for st: signed with the request MAC, or
// (BADKEY, BADSIG) unsigned with the error.
func (s *Server) sign(m *dns.Msg, st tsigState) ([]byte, error) {
	t := &dns.TSIG{
		Hdr:        dns.RR_Header{Name: st.key, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm:  st.alg,
		Fudge:      tsigFudge,
		OrigId:     m.Id,
		Error:      st.err,
		TimeSigned: uint64(s.now().Unix()),
	}
	switch st.err {
	case dns.RcodeBadKey, dns.RcodeBadSig:
		t.TimeSigned = st.timeSigned
	case dns.RcodeBadTime:
		// RFC 8945 section 5.2.3: the request's time, ours in Other Data.
		t.TimeSigned = st.timeSigned
		t.OtherLen = 6
		t.OtherData = fmt.Sprintf("%012x", uint64(s.now().Unix()))
	}
	m.Extra = append(m.Extra, t)
	b, _, err := dns.TsigGenerate(m, st.secret, st.mac, false)
	return b, err
}

// tsigError is the reply to a query whose TSIG failed: NOTAUTH with the
// TSIG error.
func (s *Server) tsigError(req *dns.Msg, st tsigState) ([]byte, error) {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeNotAuth)
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(uint16(s.udpSize()), opt.Do())
	}
	return s.sign(m, st)
}

// handleSigned answers a TSIG-signed query (raw as received, req parsed).
func (s *Server) handleSigned(ctx context.Context, raw []byte, req *dns.Msg, src netip.AddrPort, local netip.Addr, tcp bool, ps pass) ([]byte, outcome) {
	st := s.checkTSIG(raw, req)
	if st.err != 0 {
		s.stats.count("", dns.RcodeNotAuth)
		s.logger().Debug("dnssplit: bad TSIG", "client", src, "key", st.key, "error", dns.RcodeToString[int(st.err)])
		b, err := s.tsigError(req, st)
		if err != nil {
			return nil, outcome{}
		}
		return b, outcome{}
	}
	req.Extra = req.Extra[:len(req.Extra)-1] // answered as the plain query it signs
	m, oc := s.resolve(ctx, req, Client{Source: src.Addr(), Local: local, Key: dns.CanonicalName(st.key)}, tcp, ps)
	if m == nil {
		return nil, oc
	}
	b, err := s.sign(m, st)
	if err == nil && len(b) > s.replyLimit(req, tcp) {
		// The TSIG record pushed the reply over the limit: TC, no data.
		truncate(m, 0)
		b, err = s.sign(m, st)
	}
	if err != nil {
		s.logger().Debug("dnssplit: sign reply", "err", err)
		return nil, oc
	}
	return b, oc
}
