package dnssplit

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// Transfer lets standard secondaries (BIND, Knot, NSD) copy the zones of a
// view by AXFR or IXFR, so they keep answering when this machine is down.
// The secondary's address selects the view whose zones it gets, exactly as
// for queries.
type Transfer struct {
	// Allow lists the networks secondaries may transfer from. Empty allows
	// nobody.
	Allow []netip.Prefix

	// TSIG optionally maps key names to base64 secrets. If it has entries,
	// every transfer must be signed with one of them (HMAC-SHA256 and the
	// other algorithms miekg/dns knows).
	TSIG map[string]string

	// Notify lists the secondaries sent a NOTIFY (RFC 1996) when a zone changes.
	Notify []netip.AddrPort

	// NotifyKey optionally names the TSIG key NOTIFY messages are signed with.
	NotifyKey string

	// NotifyAlgorithm optionally sets the TSIG algorithm of NOTIFY; if
	// empty, dns.HmacSHA256 is used.
	NotifyAlgorithm string
}

// transferChunk bounds the records in one AXFR message, keeping each well
// under the 64 KiB TCP message limit.
const transferChunk = 200

// transferAllowed reports whether src may transfer zones (TSIG aside).
func (s *Server) transferAllowed(src netip.Addr) bool {
	return s.Transfer != nil && containsAddr(s.Transfer.Allow, src)
}

// serveTransfer answers an AXFR or IXFR query on a TCP connection.
func (s *Server) serveTransfer(raw []byte, src netip.AddrPort, local netip.Addr, write func([]byte) error) error {
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		return err
	}
	// A signed query gets signed answers, refusals included (RFC 8945
	// section 5.3); a bad signature gets the TSIG error.
	var st *tsigState
	if req.IsTsig() != nil {
		c := s.checkTSIG(raw, req)
		if c.err != 0 {
			s.stats.transfersRefused.Add(1)
			s.noteRefusal(refusedTransfer)
			s.logger().Debug("dnssplit: zone transfer refused", "client", src, "zone", req.Question[0].Name,
				"reason", "TSIG "+dns.RcodeToString[int(c.err)], "key", c.key)
			b, err := s.tsigError(req, c)
			if err != nil {
				return err
			}
			return write(b)
		}
		req.Extra = req.Extra[:len(req.Extra)-1]
		st = &c
	}
	refuse := func(rcode int, why string) error {
		s.stats.transfersRefused.Add(1)
		s.noteRefusal(refusedTransfer)
		s.logger().Debug("dnssplit: zone transfer refused", "client", src, "zone", req.Question[0].Name, "reason", why)
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		if opt := req.IsEdns0(); opt != nil {
			// The reason, for the operator of the secondary (RFC 8914).
			m.SetEdns0(uint16(s.udpSize()), opt.Do())
			m.IsEdns0().Option = append(m.IsEdns0().Option, prohibited())
		}
		var b []byte
		var err error
		if st != nil {
			b, err = s.sign(m, *st)
		} else {
			b, err = m.Pack()
		}
		if err != nil {
			return err
		}
		return write(b)
	}
	if !s.transferAllowed(src.Addr()) {
		return refuse(dns.RcodeRefused, "address not allowed")
	}
	if len(s.Transfer.TSIG) > 0 && st == nil {
		return refuse(dns.RcodeNotAuth, "not signed")
	}
	client := Client{Source: src.Addr(), Local: local}
	if st != nil {
		client.Key = dns.CanonicalName(st.key)
	}
	choice := SelectView(s.views(), s.TrustedProxies, client)
	q := req.Question[0]
	if choice.View == nil || choice.View.Records == nil {
		return refuse(dns.RcodeNotAuth, "no zone")
	}
	rrs, ok := choice.View.Records.ZoneRecords(q.Name)
	if !ok {
		return refuse(dns.RcodeNotAuth, "not a zone of view "+choice.View.Name)
	}
	soa := rrs[0].(*dns.SOA)
	var msgs [][]dns.RR
	if q.Qtype == dns.TypeIXFR && len(req.Ns) == 1 {
		if have, ok := req.Ns[0].(*dns.SOA); ok && !serialLess(have.Serial, soa.Serial) {
			msgs = [][]dns.RR{{soa}} // up to date (RFC 1995 section 2)
		}
	}
	if msgs == nil {
		// Full transfer (also the answer to IXFR without history, RFC 1995 section 4).
		all := append(rrs, soa)
		for len(all) > 0 {
			n := min(len(all), transferChunk)
			msgs = append(msgs, all[:n])
			all = all[n:]
		}
	}
	mac := ""
	if st != nil {
		mac = st.mac
	}
	for i, chunk := range msgs {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		m.Answer = chunk
		m.Compress = true
		if i > 0 {
			m.Question = nil
		}
		var b []byte
		var err error
		if st != nil {
			m.SetTsig(st.key, st.alg, tsigFudge, s.now().Unix())
			b, mac, err = dns.TsigGenerate(m, st.secret, mac, i > 0)
		} else {
			b, err = m.Pack()
		}
		if err != nil {
			return err
		}
		if err := write(b); err != nil {
			return err
		}
	}
	s.stats.transfersServed.Add(1)
	s.logger().Info("dnssplit: zone transfer", "client", src, "zone", q.Name, "view", choice.View.Name, "serial", soa.Serial)
	return nil
}

func (n *notifier) exchange(ctx context.Context, c *dns.Client, m *dns.Msg, to netip.AddrPort) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	conn, err := n.s.fwd.dial(ctx, "udp", to.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r, _, err := c.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: conn, TsigSecret: c.TsigSecret})
	return r, err
}

// serialLess compares SOA serials with RFC 1982 arithmetic.
func serialLess(a, b uint32) bool { return a != b && int32(b-a) > 0 }

// notifier sends NOTIFY to the secondaries of a view when one of its zones
// changes: the view's own Notify list, or Transfer.Notify.
type notifier struct {
	s       *Server
	mu      sync.Mutex
	pending map[notifyKey]bool
	wake    chan struct{}
}

type notifyKey struct {
	view *View
	zone string
}

// notifyTries and notifyTimeout: RFC 1996 retransmits unacknowledged NOTIFY;
// three tries two seconds apart ride out a lost packet without delaying
// shutdown long.
const (
	notifyTries   = 3
	notifyTimeout = 2 * time.Second
)

// wantsNotify reports whether any secondary is to be sent NOTIFY.
func (s *Server) wantsNotify() bool {
	if s.Transfer == nil {
		return false
	}
	if len(s.Transfer.Notify) > 0 {
		return true
	}
	for _, v := range s.views() {
		if v != nil && len(v.Notify) > 0 {
			return true
		}
	}
	return false
}

func newNotifier(s *Server) *notifier {
	n := &notifier{s: s, pending: map[notifyKey]bool{}, wake: make(chan struct{}, 1)}
	for _, v := range s.views() {
		n.watch(v, false)
	}
	return n
}

// watch follows the changes of v's zones; now also queues NOTIFY for all
// of them at once (after a reload).
func (n *notifier) watch(v *View, now bool) {
	if v == nil || v.Records == nil {
		return
	}
	v.Records.onChange(func(zone string) { n.changed(v, zone) })
	if now {
		for _, z := range v.Records.Zones() {
			n.changed(v, z)
		}
	}
}

func (n *notifier) changed(v *View, zone string) {
	n.mu.Lock()
	n.pending[notifyKey{v, zone}] = true
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.wake:
			}
			n.mu.Lock()
			keys := n.pending
			n.pending = map[notifyKey]bool{}
			n.mu.Unlock()
			for k := range keys {
				to := k.view.Notify
				if len(to) == 0 {
					to = n.s.Transfer.Notify
				}
				for _, sec := range to {
					if err := n.send(ctx, k.view, k.zone, sec); err != nil {
						n.s.logger().Warn("dnssplit: notify", "zone", k.zone, "view", k.view.Name, "secondary", sec, "err", err)
					} else {
						n.s.stats.notifiesSent.Add(1)
					}
				}
			}
		}
	}()
}

// send sends one NOTIFY, signed with the view's first TSIG key if it has
// TSIGKeys (its secondaries know that key), else with Transfer.NotifyKey.
func (n *notifier) send(ctx context.Context, v *View, zone string, to netip.AddrPort) error {
	t := n.s.Transfer
	key := t.NotifyKey
	if len(v.TSIGKeys) > 0 {
		key = v.TSIGKeys[0]
	}
	c := &dns.Client{Net: "udp", Timeout: notifyTimeout}
	var errs []error
	for range notifyTries {
		m := new(dns.Msg)
		m.SetNotify(zone)
		if key != "" {
			sec, ok := n.s.tsigSecret(dns.Fqdn(key))
			if !ok {
				return fmt.Errorf("dnssplit: notify key %q not in TSIG", key)
			}
			alg := t.NotifyAlgorithm
			if alg == "" {
				alg = dns.HmacSHA256
			}
			c.TsigSecret = map[string]string{dns.Fqdn(key): sec}
			m.SetTsig(dns.Fqdn(key), alg, tsigFudge, n.s.now().Unix())
		}
		r, err := n.exchange(ctx, c, m, to)
		if err == nil && r.Rcode != dns.RcodeSuccess {
			err = fmt.Errorf("dnssplit: notify answered %s", dns.RcodeToString[r.Rcode])
		}
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return netcore.Join(errs...)
}
