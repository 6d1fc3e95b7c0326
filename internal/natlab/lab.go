package natlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
)

// Config describes a lab. The zero value builds a port-restricted NAT
// (plain conntrack masquerade) without hairpinning, with the kernel's default
// UDP timeouts and no second site.
type Config struct {
	// Kind is site A's NAT. KindUnknown means PortRestricted, the most common
	// home router.
	Kind Kind

	// Hairpin enables hairpinning (NAT loopback) on site A's router: packets
	// from the LAN to the public address are translated like packets from the
	// internet (to UDP mappings, the 1:1 host and port forwards) and their
	// source is rewritten to the public address. See Kind.Hairpins for the
	// kinds where it applies.
	Hairpin bool

	// UDPTimeout optionally sets the router's (and CGN's) conntrack UDP
	// timeouts, net.netfilter.nf_conntrack_udp_timeout and
	// nf_conntrack_udp_timeout_stream, i.e. the mapping lifetime. If zero,
	// the kernel's defaults (30 s and 120 s) are kept.
	UDPTimeout time.Duration

	// Loss optionally makes site A's link lossy: the router (the home
	// router, for DoubleNAT and CGN) drops this percentage of the UDP
	// packets it forwards to and from its WAN side, each direction on its
	// own, at random (nftables numgen). 20 drops about 36 % of round trips.
	// Zero means no loss; at most 100.
	Loss int

	// Forwards optionally lists port forwards on site A's router (on its
	// public address; for DoubleNAT, on the home router's 100.64 address,
	// reachable only from the CGN, as with a real carrier-grade NAT).
	Forwards []Forward

	// SiteB optionally adds a second, independent NATed site (SiteBRouter,
	// SiteBLAN and, for DoubleNAT, SiteBCGN) of this kind, without
	// hairpinning. KindUnknown means no second site.
	SiteB Kind

	// IPv6 optionally adds IPv6 everywhere (2001:db8::/32, see the package
	// doc), routed without NAT as ISPs deliver it: each LAN host has a
	// global address, and every router except NoNAT's runs a stateful
	// firewall (address-and-port-dependent filtering, Kind.IPv6Filtering).
	// Port forwards open pinholes to To at ToPort. If false, IPv6 is
	// disabled in every namespace.
	IPv6 bool
}

// Forward is a port forward: traffic to the router's public address and Port
// is sent to host To at ToPort.
type Forward struct {
	Proto  string // "tcp" or "udp"
	Port   uint16
	To     Host   // LAN1 or LAN2
	ToPort uint16 // if zero, Port
}

// Lab is a running topology of network namespaces. Its methods are safe for
// concurrent use. It is torn down by the t.Cleanup registered in New.
type Lab struct {
	t      testing.TB
	cfg    Config
	prefix string
	ns     map[Host]string
	addrs  map[Host][]netip.Addr
	addrs6 map[Host][]netip.Addr
	pubA   netip.Addr
	pubB   netip.Addr

	mu    sync.Mutex
	procs []*exec.Cmd
}

// namePrefix starts the name of every namespace the lab creates: "hpl"
// followed by the creating process's ID and start time (for the stale-lab
// sweeper), a per-process sequence number and the host, joined by dashes
// ("hpl4242-2n9c-3-lan1").
const namePrefix = "hpl"

// labSeq numbers the labs of this process so that their names are unique.
var labSeq atomic.Uint64

// New builds the lab described by cfg and registers its teardown with
// t.Cleanup. It skips t (or fails it when HAIRPIN_LAB=required) when not root
// or when ip or nft are missing, and fails t when the lab cannot be built.
// Labs left behind by killed test processes are removed first.
func New(t testing.TB, cfg Config) *Lab {
	t.Helper()
	interop.NeedRoot(t)
	interop.Need(t, "ip", "nft")
	if cfg.Kind == KindUnknown {
		cfg.Kind = PortRestricted
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	sweep()

	l := &Lab{
		t:      t,
		cfg:    cfg,
		prefix: fmt.Sprintf("%s%d-", labPrefix(), labSeq.Add(1)),
		ns:     map[Host]string{},
		addrs:  map[Host][]netip.Addr{},
		addrs6: map[Host][]netip.Addr{},
	}
	t.Cleanup(l.teardown)
	start := time.Now()
	if err := l.build(); err != nil {
		t.Fatalf("natlab: building %v lab: %v", cfg.Kind, err)
	}
	t.Logf("natlab: %v lab (hairpin %v, site B %v, IPv6 %v, loss %d%%) %s* built in %v", cfg.Kind, cfg.Hairpin, cfg.SiteB, cfg.IPv6, cfg.Loss, l.prefix, time.Since(start).Round(time.Millisecond))
	return l
}

func (c Config) validate() error {
	var errs []error
	if c.Kind > CarrierNAT {
		errs = append(errs, fmt.Errorf("natlab: unknown kind %d", c.Kind))
	}
	if c.SiteB > CarrierNAT {
		errs = append(errs, fmt.Errorf("natlab: unknown site B kind %d", c.SiteB))
	}
	if c.Loss < 0 || c.Loss > 100 {
		errs = append(errs, fmt.Errorf("natlab: Loss %d%%: must be 0 to 100", c.Loss))
	}
	if c.UDPTimeout < 0 || (c.UDPTimeout > 0 && c.UDPTimeout < time.Second) {
		errs = append(errs, fmt.Errorf("natlab: UDPTimeout %v: must be zero or at least 1s", c.UDPTimeout))
	}
	for i, f := range c.Forwards {
		if f.Proto != "tcp" && f.Proto != "udp" {
			errs = append(errs, fmt.Errorf("natlab: Forwards[%d]: proto %q: want tcp or udp", i, f.Proto))
		}
		if f.Port == 0 {
			errs = append(errs, fmt.Errorf("natlab: Forwards[%d]: port 0", i))
		}
		if f.To != LAN1 && f.To != LAN2 {
			errs = append(errs, fmt.Errorf("natlab: Forwards[%d]: to %v: want LAN1 or LAN2", i, f.To))
		}
	}
	return errors.Join(errs...)
}

// Config returns the lab's configuration (with Kind defaulted).
func (l *Lab) Config() Config { return l.cfg }

// Hairpins reports whether site A hairpins UDP mappings (see Kind.Hairpins).
func (l *Lab) Hairpins() bool { return l.cfg.Kind.Hairpins(l.cfg.Hairpin) }

// Hosts returns the hosts this lab has.
func (l *Lab) Hosts() []Host {
	var hs []Host
	for h := range l.ns {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	return hs
}

// Namespace returns the name of host's network namespace (as listed by
// `ip netns`), for tools that take one. It fails the test for a host the lab
// does not have.
func (l *Lab) Namespace(host Host) string {
	l.t.Helper()
	ns, ok := l.ns[host]
	if !ok {
		l.t.Fatalf("natlab: this %v lab has no host %v", l.cfg.Kind, host)
	}
	return ns
}

// Addr returns host's primary address: a LAN host's LAN address, a router's
// WAN-side address, Server's first address.
func (l *Lab) Addr(host Host) netip.Addr {
	l.t.Helper()
	a := l.Addrs(host)
	return a[0]
}

// Addrs returns all of host's addresses, primary first: Server has two
// (for an RFC 5780 server), routers have their WAN then LAN address.
func (l *Lab) Addrs(host Host) []netip.Addr {
	l.t.Helper()
	a, ok := l.addrs[host]
	if !ok {
		l.t.Fatalf("natlab: this %v lab has no host %v", l.cfg.Kind, host)
	}
	return slices.Clone(a)
}

// Addr6 returns host's primary IPv6 address (Config.IPv6), or the zero
// Addr without IPv6. A LAN host's IPv6 address is also its public one.
func (l *Lab) Addr6(host Host) netip.Addr {
	if a := l.addrs6[host]; len(a) > 0 {
		return a[0]
	}
	return netip.Addr{}
}

// Addrs6 returns all of host's IPv6 addresses, primary first (Server has
// two), or nil without IPv6.
func (l *Lab) Addrs6(host Host) []netip.Addr { return slices.Clone(l.addrs6[host]) }

// PublicAddr returns the address the internet sees as the source of LAN1's
// packets: the router's public address, the CGN's for DoubleNAT, LAN1's own
// for NoNAT.
func (l *Lab) PublicAddr() netip.Addr { return l.pubA }

// SiteBPublicAddr is PublicAddr for SiteBLAN (invalid without a site B).
func (l *Lab) SiteBPublicAddr() netip.Addr { return l.pubB }

// ServerAddrs returns Server's two addresses.
func (l *Lab) ServerAddrs() (netip.Addr, netip.Addr) {
	a := l.addrs[Server]
	return a[0], a[1]
}

// teardown kills what the lab started and deletes its namespaces.
func (l *Lab) teardown() {
	if l.t.Failed() && len(l.ns) > 0 {
		l.t.Logf("natlab: the test failed; lab state:\n%s", l.Debug())
	}
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for _, c := range procs {
		stop(c)
	}
	var b strings.Builder
	for _, ns := range l.ns {
		fmt.Fprintf(&b, "netns del %s\n", ns)
	}
	if b.Len() == 0 {
		return
	}
	if err := runIP("", b.String()); err != nil {
		l.t.Errorf("natlab: teardown: %v", err)
	}
}
