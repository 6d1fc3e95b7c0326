package relay

import "encoding/binary"

// The ChannelData fast path (RFC 8656 §12): the relay's hot path both ways
// never reaches the TURN engine.
//
// Client to peer: a datagram (or stream frame) whose first two bits are 01
// is recognised by its 4-byte header before any STUN parsing, its 5-tuple
// looked up in the allocation table, its channel number in the
// allocation's bindings, and its payload written to the relay socket after
// the peer policy and the bandwidth cap (relayChannelData, relayConn.writeTo).
//
// Peer to client: the relay socket is read into a buffer 4 bytes in, so the
// ChannelData header is written in front of the datagram in place and the
// whole sent on the client-facing socket (relayConn.ReadFrom, toClient).
// When the peer is another allocation of ours, the client's ChannelData
// header is rewritten in place for the other allocation's channel and sent
// straight to its client, the relay sockets skipped (relayConn.writeTo).
//
// The tables are the engine's own state mirrored from its events
// (allocation, permission and channel created and deleted), so the engine
// keeps deciding lifetimes: a binding it times out is gone here too. Both
// directions also require a live permission for the peer's address, which
// the engine does not check on channels.

// Channel numbers the engine binds (RFC 5766 §11's 0x4000-0x7FFF; RFC 8656
// narrowed it to 0x4FFF, but a client may still bind the older range).
const (
	minChannel = 0x4000
	maxChannel = 0x7FFF
)

// parseChannelData splits a ChannelData message into its channel number and
// payload. The datagram may be longer than the length field says (padding
// on streams, or slack on UDP); it may not be shorter.
func parseChannelData(b []byte) (number uint16, payload []byte, ok bool) {
	if len(b) < 4 {
		return 0, nil, false
	}
	number = binary.BigEndian.Uint16(b[0:2])
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if number < minChannel || number > maxChannel || 4+n > len(b) {
		return 0, nil, false
	}
	return number, b[4 : 4+n], true
}

// relayChannelData relays a ChannelData message from the client of 5-tuple
// k to the peer bound to its channel. Anything else is dropped and counted:
// malformed headers (Stats.Malformed), and no allocation for k, no UDP relay
// socket, an unbound channel or a peer whose permission expired
// (Stats.ChannelDrops). It does not allocate.
func (s *Server) relayChannelData(b []byte, k allocKey) {
	number, payload, ok := parseChannelData(b)
	if !ok {
		s.counters.malformed.Add(1)
		return
	}
	a := s.allocs.get(k)
	if a == nil {
		s.counters.channelDrops.Add(1)
		return
	}
	rc := a.relay.Load()
	peer, ok := a.channelPeer(number)
	if rc == nil || !ok {
		s.counters.channelDrops.Add(1)
		return
	}
	_, _ = rc.writeTo(b[:4+len(payload)], 4, peer)
}
