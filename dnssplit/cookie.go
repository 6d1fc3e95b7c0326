package dnssplit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// DNS cookies (RFC 7873, server cookie layout of RFC 9018): a client that
// returns the server cookie it was given proves its source address is not
// spoofed, so it is exempt from the rate limit. The hash is HMAC-SHA-256
// truncated to 8 bytes, keyed by Server.CookieSecret.

const (
	cookieVersion = 1
	// cookieLifetime is how long a server cookie is accepted (RFC 9018
	// recommends one hour) and cookieRefresh when a fresh one is sent (half
	// an hour, as RFC 9018 suggests).
	cookieLifetime = time.Hour
	cookieRefresh  = 30 * time.Minute
)

type cookieVerdict int

const (
	cookieNone    cookieVerdict = iota // no cookie option
	cookieClient                       // a client cookie only, or a stale or wrong server cookie
	cookieValid                        // a server cookie we issued to this client
	cookieBadForm                      // malformed: FORMERR
)

func (s *Server) cookieSecret() []byte {
	if len(s.CookieSecret) > 0 {
		return s.CookieSecret
	}
	return s.randomSecret
}

func newRandomSecret() []byte {
	b := make([]byte, 16)
	rand.Read(b)
	return b
}

// serverCookie computes the 16-byte server cookie for client cookie cc,
// source address src and time ts.
func (s *Server) serverCookie(cc []byte, src netip.Addr, ts uint32) []byte {
	out := make([]byte, 16)
	out[0] = cookieVersion
	binary.BigEndian.PutUint32(out[4:8], ts)
	mac := hmac.New(sha256.New, s.cookieSecret())
	mac.Write(cc)
	mac.Write(out[:8])
	a := src.Unmap().AsSlice()
	mac.Write(a)
	copy(out[8:], mac.Sum(nil)[:8])
	return out
}

// checkCookie inspects the query's cookie and returns the option to put in
// the reply (nil when the query had none).
func (s *Server) checkCookie(req *dns.Msg, src netip.Addr) (*dns.EDNS0_COOKIE, cookieVerdict) {
	opt := req.IsEdns0()
	if opt == nil {
		return nil, cookieNone
	}
	var c *dns.EDNS0_COOKIE
	for _, o := range opt.Option {
		if cc, ok := o.(*dns.EDNS0_COOKIE); ok {
			c = cc
			break
		}
	}
	if c == nil {
		return nil, cookieNone
	}
	raw, err := hex.DecodeString(c.Cookie)
	if err != nil || len(raw) < 8 || (len(raw) > 8 && len(raw) < 16) || len(raw) > 40 {
		return nil, cookieBadForm
	}
	cc := raw[:8]
	now := uint32(s.now().Unix())
	verdict := cookieClient
	if len(raw) == 24 && raw[8] == cookieVersion {
		ts := binary.BigEndian.Uint32(raw[12:16])
		age := time.Duration(int32(now-ts)) * time.Second
		if age > -5*time.Minute && age < cookieLifetime && hmac.Equal(raw[8:], s.serverCookie(cc, src, ts)) {
			verdict = cookieValid
			if age < cookieRefresh {
				return &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: c.Cookie}, verdict
			}
		}
	}
	fresh := append(append([]byte{}, cc...), s.serverCookie(cc, src, now)...)
	return &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hex.EncodeToString(fresh)}, verdict
}

func (s *Server) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}
