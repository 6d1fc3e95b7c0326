package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"

	"github.com/pion/stun/v3"
)

// frameSource describes where a client frame came from and how to answer it.
type frameSource struct {
	client    netip.AddrPort
	server    netip.AddrPort
	transport string // "udp", "tcp" or "tls"
	reply     func([]byte)
	// authed is set by inspect once a request from this source carried
	// valid credentials; streams lift their handshake deadline then.
	authed bool
	// verified says whether the frame inspect passed last carried valid
	// credentials (not just an earlier one).
	verified bool
}

// isChannelData reports whether b starts like a ChannelData message: the two
// top bits of the first byte are 01 (RFC 8656 §12).
func isChannelData(b []byte) bool {
	return len(b) >= 4 && b[0]&0xC0 == 0x40
}

// inspect runs every client frame through our policy before the engine sees
// it: credentials (401, not the engine's 400), the per-source 401 budget, the
// peer policy on CreatePermission, ChannelBind, Connect and Send (403), the
// permission limit (508) and drain. It reports whether the engine gets the
// frame. ChannelData passes untouched: its peer was checked when the channel
// was bound, and again on the relay socket.
func (s *Server) inspect(b []byte, src *frameSource) bool {
	src.verified = false
	if isChannelData(b) {
		return true
	}
	if !stun.IsMessage(b) {
		s.counters.malformed.Add(1)
		return false
	}
	// Cap the capacity: pion's integrity check appends its HMAC after
	// Raw, which would overwrite the next message buffered behind b.
	m := &stun.Message{Raw: b[:len(b):len(b)]}
	if err := m.Decode(); err != nil {
		s.counters.malformed.Add(1)
		return false
	}
	switch m.Type.Class {
	case stun.ClassIndication:
		if m.Type.Method != stun.MethodSend {
			return true
		}
		for _, peer := range peerAddrs(m) {
			if d := s.checkPeerPort(peer, false); d != "" {
				s.deny(src, "", peer.Addr(), d, "Send")
				return false
			}
		}
		return true
	case stun.ClassRequest:
	default:
		return true // the engine ignores responses from clients
	}
	method := m.Type.Method
	if method == stun.MethodBinding {
		return true
	}
	if !m.Contains(stun.AttrMessageIntegrity) {
		// The engine answers with a 401 challenge carrying a nonce.
		if !s.unauth.Allow(src.client.Addr()) {
			s.counters.unauthDrops.Add(1)
			return false
		}
		s.counters.challenges.Add(1)
		return true
	}
	var user stun.Username
	var realm stun.Realm
	_ = user.GetFrom(m)
	_ = realm.GetFrom(m)
	k := allocKey{client: src.client, server: src.server}
	// A live allocation's own 5-tuple is exempt from the failure budgets:
	// a guesser behind the same address must not end it.
	live := s.allocs.exists(k)
	userKey := s.auth.userKey(user.String())
	if !live {
		if s.failSrc.Tokens(src.client.Addr()) < 1 {
			s.counters.failureDrops.Add(1)
			s.logger().Debug("relay: failure budget spent, request dropped", "client", src.client, "transport", src.transport)
			return false
		}
		if s.failUser.Tokens(userKey) < 1 {
			s.counters.userFailureDrops.Add(1)
			s.logger().Debug("relay: user's failure budget spent, request dropped", "client", src.client,
				"transport", src.transport, "user", userKey)
			return false
		}
	}
	cred, err := s.auth.lookup(user.String(), realm.String())
	var key []byte
	if err == nil {
		err = errBadIntegrity
		for _, k := range cred.keys {
			if stun.MessageIntegrity(k).Check(m) == nil {
				key, err = k, nil
				break
			}
		}
	}
	if err != nil {
		s.counters.authFailures.Add(1)
		if !live {
			s.failSrc.Allow(src.client.Addr())
			s.failUser.Allow(userKey)
		}
		if errors.Is(err, errTooLong) && s.tooLongLog.allow(s.now()) {
			// Not an attack's noise but a deployment mistake (coturn takes
			// 30-day credentials): the operator must see why calls fail.
			s.logger().Info("relay: REST credential refused: it expires after the cap (MaxCredentialLifetime); issue shorter ones or raise the cap",
				"client", src.client, "username", user.String(), "cap", s.auth.maxLife, "suppressed", s.tooLongLog.take())
		} else if errors.Is(err, errTooLong) {
			s.tooLongLog.skip()
		}
		s.logger().Debug("relay: credentials refused", "client", src.client, "transport", src.transport,
			"username", user.String(), "err", err)
		if !s.unauth.Allow(src.client.Addr()) {
			s.counters.unauthDrops.Add(1)
			return false
		}
		var nonce stun.Nonce
		_ = nonce.GetFrom(m)
		src.reply(errorReply(m, stun.CodeUnauthorized, nil,
			stun.NewRealm(s.auth.realm), stun.NewNonce(nonce.String())))
		return false
	}
	src.authed, src.verified = true, true
	if len(cred.keys) > 1 {
		s.auth.remember(user.String(), key)
	}
	switch method {
	case stun.MethodAllocate:
		if s.draining.Load() && !s.allocs.exists(k) {
			src.reply(errorReply(m, stun.CodeInsufficientCapacity, key))
			return false
		}
	case stun.MethodCreatePermission, stun.MethodChannelBind, stun.MethodConnect:
		peers := peerAddrs(m)
		addrs := make([]netip.Addr, 0, len(peers))
		for _, peer := range peers {
			var d Denial
			if method == stun.MethodCreatePermission {
				d = s.checkPermission(peer)
			} else if d = s.checkPeer(peer.Addr()); d == "" {
				d = s.checkPeerPort(peer, method == stun.MethodConnect)
			}
			if d != "" {
				s.deny(src, cred.userID, peer.Addr(), d, method.String())
				src.reply(errorReply(m, stun.CodeForbidden, key))
				return false
			}
			addrs = append(addrs, Canonical(peer.Addr()))
		}
		if method != stun.MethodConnect && !s.allocs.permitRoom(k, addrs, s.Limits.permissions()) {
			s.counters.quotaRejections.Add(1)
			s.logger().Info("relay: permission limit reached", "client", src.client, "user", cred.userID)
			src.reply(errorReply(m, stun.CodeInsufficientCapacity, key))
			return false
		}
	}
	return true
}

func (s *Server) deny(src *frameSource, user string, peer netip.Addr, why Denial, what string) {
	s.counters.peerDenials.Add(1)
	if why == DenyOwn {
		s.counters.ownDenials.Add(1)
	}
	level := slog.LevelInfo
	if what == "Send" {
		level = slog.LevelDebug // per packet, and unauthenticated: no log flood
	}
	s.logger().Log(context.Background(), level, "relay: peer denied", "client", src.client, "transport", src.transport,
		"user", user, "peer", peer, "reason", string(why), "request", what)
}

// errorReply builds an error response to m; with key it carries
// MESSAGE-INTEGRITY, as answers to authenticated requests must.
func errorReply(m *stun.Message, code stun.ErrorCode, key []byte, extra ...stun.Setter) []byte {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(m.Type.Method, stun.ClassErrorResponse),
		code,
	}
	setters = append(setters, extra...)
	if key != nil {
		setters = append(setters, stun.MessageIntegrity(key))
	}
	setters = append(setters, stun.Fingerprint)
	out, err := stun.Build(setters...)
	if err != nil {
		return nil
	}
	return out.Raw
}

// peerAddrs decodes every XOR-PEER-ADDRESS attribute of m. Malformed ones
// decode as the zero AddrPort, which the policy refuses.
func peerAddrs(m *stun.Message) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range m.Attributes {
		if a.Type == stun.AttrXORPeerAddress {
			out = append(out, decodeXORAddr(a.Value, m.TransactionID))
		}
	}
	return out
}

// decodeXORAddr decodes an XOR-*-ADDRESS value (RFC 8489 §14.2).
func decodeXORAddr(v []byte, tid [stun.TransactionIDSize]byte) netip.AddrPort {
	if len(v) < 4 {
		return netip.AddrPort{}
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ uint16(magicCookie>>16)
	var pad [16]byte
	binary.BigEndian.PutUint32(pad[:4], magicCookie)
	copy(pad[4:], tid[:])
	switch v[1] {
	case 0x01:
		if len(v) != 8 {
			return netip.AddrPort{}
		}
		var ip [4]byte
		for i := range ip {
			ip[i] = v[4+i] ^ pad[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(ip), port)
	case 0x02:
		if len(v) != 20 {
			return netip.AddrPort{}
		}
		var ip [16]byte
		for i := range ip {
			ip[i] = v[4+i] ^ pad[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(ip), port)
	}
	return netip.AddrPort{}
}

// checkPeer applies the peer policy, exempting our own advertised relay
// address: a peer that is another allocation of ours is relayed in process
// (see relayConn.WriteTo), so it never reaches the network.
func (s *Server) checkPeer(a netip.Addr) Denial {
	if s.isOwnRelayAddr(Canonical(a)) {
		return ""
	}
	return s.policy.Check(a)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// magicCookie is the fixed STUN magic cookie (RFC 8489 §5).
const magicCookie = 0x2112A442
