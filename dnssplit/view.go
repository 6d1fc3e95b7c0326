package dnssplit

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// A View is the set of answers one group of clients sees. The zero value
// matches nobody (unless it is the last view and no other matches: see
// Server.Views), has no local data and does not recurse.
type View struct {
	// Name identifies the view in metrics, logs and Explain.
	Name string

	// Networks lists the client source networks that get this view.
	Networks []netip.Prefix

	// LocalAddrs optionally restricts the view to queries that arrived on
	// one of these local addresses (a multi-homed host: the LAN interface
	// gets the inside view). If empty, the local address does not matter.
	LocalAddrs []netip.Prefix

	// Recursion allows clients of this view to have names outside the
	// local data forwarded to the upstreams. Without it they get answers
	// from the local data or REFUSED, so the server is never an open resolver.
	// It applies only to clients in Networks (or a trusted proxy's client
	// subnet in them): clients that get the last view by default never recurse.
	Recursion bool

	// SplitTypes optionally limits the local data to these query types
	// (for example only dns.TypeA, passing AAAA through because global IPv6
	// works the same inside and outside). Other types for local names are
	// forwarded to the upstreams, for every client. If empty, all types are split.
	SplitTypes []uint16

	// Records optionally holds the view's local data. If nil the view has none.
	Records *Records

	// TSIGKeys optionally lists TSIG key names (of Transfer.TSIG) that
	// select this view whatever the source address, as BIND's
	// match-clients { key k; }: a query or transfer signed with one of
	// them gets this view's data, so each view's secondaries copy their
	// view's zones. Keys are tried before networks.
	TSIGKeys []string

	// Notify optionally lists the secondaries of this view sent a NOTIFY
	// when one of its zones changes; if empty, Transfer.Notify is used.
	Notify []netip.AddrPort
}

// splits reports whether qtype is answered from the view's local data.
func (v *View) splits(qtype uint16) bool {
	return len(v.SplitTypes) == 0 || slices.Contains(v.SplitTypes, qtype)
}

// Reason says why a view was chosen.
type Reason int

// Reasons for a view choice.
const (
	ReasonUnknown      Reason = iota
	ReasonSource              // the packet's source address is in the view's networks
	ReasonClientSubnet        // a trusted proxy's EDNS Client Subnet address is in the view's networks
	ReasonDefault             // nothing matched; the last view is the default
	ReasonNoView              // no views are configured
	ReasonTSIGKey             // the query was signed with a TSIG key the view lists
)

func (r Reason) String() string {
	switch r {
	case ReasonSource:
		return "source"
	case ReasonClientSubnet:
		return "client-subnet"
	case ReasonDefault:
		return "default"
	case ReasonNoView:
		return "no-view"
	case ReasonTSIGKey:
		return "tsig-key"
	}
	return "unknown"
}

// Client describes where a query came from, as seen by view selection.
type Client struct {
	// Source is the packet's source address.
	Source netip.Addr
	// Local is the address the query arrived on; invalid if unknown.
	Local netip.Addr
	// Subnet is the EDNS Client Subnet the query carried; invalid if none.
	Subnet netip.Prefix
	// Key is the name of the TSIG key (lower case, fully qualified) whose
	// valid signature the query carried; empty if unsigned.
	Key string
}

// Choice is the result of view selection.
type Choice struct {
	// View is the chosen view, nil only when no views exist.
	View *View
	// Index is the chosen view's position in the list, -1 if none.
	Index int
	// Reason says why.
	Reason Reason
	// Matched is the network that matched (invalid for ReasonDefault).
	Matched netip.Prefix
	// Address is the address that was matched: Source or the Subnet's address.
	Address netip.Addr
	// SubnetIgnored reports that the query carried an EDNS Client Subnet
	// that was not used because its sender is not a trusted proxy.
	SubnetIgnored bool
	// Key is the TSIG key that chose the view (ReasonTSIGKey).
	Key string
}

// String explains the choice in one line.
func (c Choice) String() string {
	name := "<none>"
	if c.View != nil {
		name = fmt.Sprintf("%q", c.View.Name)
	}
	s := fmt.Sprintf("view %s (#%d): ", name, c.Index)
	switch c.Reason {
	case ReasonSource:
		s += fmt.Sprintf("source %s is in %s", c.Address, c.Matched)
	case ReasonClientSubnet:
		s += fmt.Sprintf("client subnet address %s from a trusted proxy is in %s", c.Address, c.Matched)
	case ReasonTSIGKey:
		s += fmt.Sprintf("signed with TSIG key %s", c.Key)
	case ReasonDefault:
		s += fmt.Sprintf("%s matched no view's networks; the last view is the default", c.Address)
		if c.View != nil && c.View.Recursion {
			s += " (without its recursion)"
		}
	default:
		s += "no views configured"
	}
	if c.SubnetIgnored {
		s += " (EDNS client subnet ignored: sender is not a trusted proxy)"
	}
	return s
}

// SelectView chooses the view for client: the first view (in order) whose
// Networks contain the address and whose LocalAddrs (if any) contain
// client.Local; the last view if none matches. The address is client.Source,
// or the EDNS Client Subnet address when Source is in trusted. SelectView is
// a pure function.
func SelectView(views []*View, trusted []netip.Prefix, client Client) Choice {
	if len(views) == 0 {
		return Choice{Index: -1, Reason: ReasonNoView, Address: client.Source}
	}
	addr, reason := client.Source.Unmap(), ReasonSource
	ignored := false
	if client.Subnet.IsValid() {
		if containsAddr(trusted, addr) {
			addr, reason = client.Subnet.Addr().Unmap(), ReasonClientSubnet
		} else {
			ignored = true
		}
	}
	local := client.Local.Unmap()
	if client.Key != "" {
		for i, v := range views {
			if v != nil && slices.ContainsFunc(v.TSIGKeys, func(k string) bool { return strings.EqualFold(dns.Fqdn(k), client.Key) }) {
				return Choice{View: v, Index: i, Reason: ReasonTSIGKey, Address: addr, Key: client.Key, SubnetIgnored: ignored}
			}
		}
	}
	for i, v := range views {
		if v == nil {
			continue
		}
		if len(v.LocalAddrs) > 0 && (!local.IsValid() || !containsAddr(v.LocalAddrs, local)) {
			continue
		}
		for _, p := range v.Networks {
			if prefixContains(p, addr) {
				return Choice{View: v, Index: i, Reason: reason, Matched: p, Address: addr, SubnetIgnored: ignored}
			}
		}
	}
	last := len(views) - 1
	return Choice{View: views[last], Index: last, Reason: ReasonDefault, Address: addr, SubnetIgnored: ignored}
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if prefixContains(p, a) {
			return true
		}
	}
	return false
}

// prefixContains is p.Contains with IPv4-mapped IPv6 addresses treated as IPv4.
func prefixContains(p netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Contains(a)
}

// clientSubnet extracts the EDNS Client Subnet of a query, if any.
func clientSubnet(m *dns.Msg) (netip.Prefix, *dns.EDNS0_SUBNET) {
	opt := m.IsEdns0()
	if opt == nil {
		return netip.Prefix{}, nil
	}
	for _, o := range opt.Option {
		e, ok := o.(*dns.EDNS0_SUBNET)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(e.Address)
		if !ok {
			return netip.Prefix{}, e
		}
		if e.Family == 1 {
			a = a.Unmap()
		}
		p, err := a.Prefix(int(e.SourceNetmask))
		if err != nil {
			return netip.Prefix{}, e
		}
		return p, e
	}
	return netip.Prefix{}, nil
}

// subnetScope is the ECS scope prefix length (RFC 7871 section 7.2.1) of an
// answer whose view was chosen by the client subnet addr: the shortest
// prefix of addr inside which every address selects the same view, so that
// an ECS-aware cache in front of us never hands one view's answer to a
// client of another. Every network of every view counts as a boundary.
func subnetScope(views []*View, addr netip.Addr) uint8 {
	addr = addr.Unmap()
	bits := addr.BitLen()
	var nets []netip.Prefix
	for _, v := range views {
		if v == nil {
			continue
		}
		for _, p := range v.Networks {
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			if p.Addr().BitLen() == bits {
				nets = append(nets, p.Masked())
			}
		}
	}
	for l := 0; l < bits; l++ {
		cand, _ := addr.Prefix(l)
		if !slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Bits() > l && p.Overlaps(cand) }) {
			return uint8(l)
		}
	}
	return uint8(bits)
}
