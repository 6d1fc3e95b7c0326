package nat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// PortMappingCheck is the result of CheckPortMapping.
type PortMappingCheck struct {
	// Reachable is true when the server's answer, sent to the mapping's
	// public port, arrived on the mapped socket.
	Reachable bool
	// Server is the RFC 5780 server asked.
	Server netip.AddrPort
	// SentTo is where the server sent the answer: the public address it
	// sees this host as, with the mapping's external port.
	SentTo netip.AddrPort
	// From is the address the answer came from (the server's other
	// address, which this host never sent to) when it arrived.
	From netip.AddrPort
	// Evidence holds the exchanges, as in Report.Probes.
	Evidence []Evidence
}

// CheckPortMapping checks from the outside that a UDP port mapping works: a
// host this host never sent to reaches the mapping's public port. pc must be
// the socket the mapping forwards to, fresh (it must not have sent
// anything, or its own outbound mapping could carry the answer). A second
// socket asks the first RFC 5780 server of Servers that answers to send its
// answer from its other address and port (CHANGE-REQUEST) to external's port
// (RESPONSE-PORT) of the address it sees; the mapping works when the answer
// arrives on pc. pc is read while the check runs and left open.
//
// The server sends to the public address it sees. When external's address
// is set and differs from it (a second NAT: the router's external address
// is not the internet's view), the check still runs and says whether the
// internet reaches the port, which is what matters; SentTo shows the
// difference.
//
// TCP mappings cannot be checked this way: a STUN server opens no
// connections.
func (c *Client) CheckPortMapping(ctx context.Context, pc net.PacketConn, external netip.AddrPort) (res PortMappingCheck, err error) {
	if external.Port() == 0 {
		return res, errors.New("nat: check port mapping: external port 0")
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	rec := &recorder{}
	defer func() { res.Evidence = rec.sorted() }()
	servers, err := c.resolve(ctx, rec)
	if err != nil {
		return res, fmt.Errorf("nat: check port mapping: %w", err)
	}
	e := newEngine(c.listen)
	defer e.close()
	x, err := e.adopt(pc)
	if err != nil {
		return res, fmt.Errorf("nat: check port mapping: %w", err)
	}
	y, err := e.open(ctx)
	if err != nil {
		return res, fmt.Errorf("nat: check port mapping: %w", err)
	}
	sch := spaced{interval: c.rto(), tail: 3 * c.rto(), tries: e.triesNeeded}
	var b obs
	var tried []string
	for i, srv := range servers {
		b = c.bind(ctx, e, y, srv, request{txid: newTxID()}, sch, rec, PortMappingCheckTest, i)
		if b.answered && b.other.IsValid() {
			res.Server = srv
			break
		}
		why := "no answer"
		if b.answered {
			why = "no OTHER-ADDRESS: not an RFC 5780 server"
		}
		tried = append(tried, fmt.Sprintf("%v: %s", srv, why))
		if ctx.Err() != nil {
			break
		}
	}
	if !res.Server.IsValid() {
		return res, fmt.Errorf("nat: check port mapping: no RFC 5780 server to send from another address (%v)", tried)
	}
	res.SentTo = netip.AddrPortFrom(b.mapped.Addr(), external.Port())
	rtt := max(3*b.rtt, minRTO)
	sch = spaced{interval: min(rtt, c.rto()), tail: 3 * min(rtt, c.rto()), tries: e.triesNeeded}
	req := request{txid: newTxID(), changeIP: true, changePort: true, responsePort: external.Port()}
	out := e.exchange(ctx, y, x, res.Server, req, from(b.other), false, sch)
	o := toObs(out, x, res.Server, e)
	rec.add(PortMappingCheckTest, len(servers), probeOf(PortMappingCheckTest, o, req, out))
	if out.answered && !out.arrival.msg.success {
		return res, fmt.Errorf("nat: check port mapping: %v refused the request with error %d", res.Server, out.arrival.msg.errorCode)
	}
	res.Reachable = out.answered
	if out.answered {
		res.From = out.arrival.from
	}
	return res, nil
}
