package natlab

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Fixed internet-side addressing (RFC 5737 TEST-NET-2), see the package doc.
func serverPrefixes() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("198.51.100.10/25"), netip.MustParsePrefix("198.51.100.11/25")}
}

func serverInet() netip.Prefix { return netip.MustParsePrefix("198.51.100.1/25") }
func peerPrefix() netip.Prefix { return netip.MustParsePrefix("198.51.100.130/25") }
func peerInet() netip.Prefix   { return netip.MustParsePrefix("198.51.100.129/25") }

// IPv6 internet side (RFC 3849 documentation prefix).
func serverPrefixes6() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("2001:db8:5::10/64"), netip.MustParsePrefix("2001:db8:5::11/64")}
}

func serverInet6() netip.Prefix { return netip.MustParsePrefix("2001:db8:5::1/64") }
func peerPrefix6() netip.Prefix { return netip.MustParsePrefix("2001:db8:6::130/64") }
func peerInet6() netip.Prefix   { return netip.MustParsePrefix("2001:db8:6::1/64") }

// defaultStreamTimeout is used for the nft mapping sets when Config.UDPTimeout
// is zero: the kernel's nf_conntrack_udp_timeout_stream default, the longest
// a conntrack UDP mapping lives without traffic.
const defaultStreamTimeout = 120 * time.Second

// build creates the namespaces, links, addresses, routes, sysctls and rules.
func (l *Lab) build() error {
	sites := []site{siteA(l.cfg.Kind)}
	if l.cfg.SiteB != KindUnknown {
		sites = append(sites, siteB(l.cfg.SiteB))
	}

	hosts := []Host{Internet, Server, Peer}
	for _, s := range sites {
		hosts = append(hosts, s.router)
		if s.kind.BehindCGN() {
			hosts = append(hosts, s.cgn)
		}
		hosts = append(hosts, s.lan...)
	}
	var add strings.Builder
	for _, h := range hosts {
		ns := l.prefix + h.short()
		l.ns[h] = ns
		fmt.Fprintf(&add, "netns add %s\n", ns)
	}
	if err := runIP("", add.String()); err != nil {
		return err
	}

	// Sysctls first, so that links created later start without IPv6.
	for _, h := range hosts {
		kv := []string{
			"net.ipv6.conf.all.disable_ipv6=1",
			"net.ipv6.conf.default.disable_ipv6=1",
		}
		if l.cfg.IPv6 {
			// No duplicate address detection: addresses are usable at
			// once instead of after a second or two of "tentative".
			kv = []string{
				"net.ipv6.conf.all.accept_dad=0",
				"net.ipv6.conf.default.accept_dad=0",
			}
		}
		switch h {
		case Internet, Router, CGN, SiteBRouter, SiteBCGN:
			kv = append(kv, "net.ipv4.ip_forward=1")
			if l.cfg.IPv6 {
				kv = append(kv, "net.ipv6.conf.all.forwarding=1")
			}
		}
		switch h {
		case Router, SiteBRouter:
			// br_netfilter would pass bridged frames through conntrack
			// a second time and break hairpin NAT.
			kv = append(kv, "net.bridge.bridge-nf-call-iptables=0",
				"net.bridge.bridge-nf-call-ip6tables=0",
				"net.bridge.bridge-nf-call-arptables=0")
		}
		if err := l.sysctl(h, kv...); err != nil {
			return err
		}
	}

	// Links: every veth and bridge is created directly in its namespaces, so
	// interface names only need to be unique inside one namespace.
	var links strings.Builder
	cmds := map[Host]*strings.Builder{}
	cmd := func(h Host, format string, args ...any) {
		b := cmds[h]
		if b == nil {
			b = &strings.Builder{}
			cmds[h] = b
		}
		fmt.Fprintf(b, format+"\n", args...)
	}
	veth := func(a Host, aName string, b Host, bName string) {
		fmt.Fprintf(&links, "link add %s netns %s type veth peer name %s netns %s\n", aName, l.ns[a], bName, l.ns[b])
		cmd(a, "link set %s up", aName)
		cmd(b, "link set %s up", bName)
	}
	for _, h := range hosts {
		cmd(h, "link set lo up")
	}

	veth(Server, "eth0", Internet, "srv")
	for _, p := range serverPrefixes() {
		cmd(Server, "addr add %s dev eth0", p)
	}
	cmd(Server, "route add default via %s", serverInet().Addr())
	cmd(Internet, "addr add %s dev srv", serverInet())
	l.addrs[Server] = []netip.Addr{serverPrefixes()[0].Addr(), serverPrefixes()[1].Addr()}

	veth(Peer, "eth0", Internet, "peer")
	cmd(Peer, "addr add %s dev eth0", peerPrefix())
	cmd(Peer, "route add default via %s", peerInet().Addr())
	cmd(Internet, "addr add %s dev peer", peerInet())
	l.addrs[Peer] = []netip.Addr{peerPrefix().Addr()}
	l.addrs[Internet] = []netip.Addr{serverInet().Addr(), peerInet().Addr()}
	v6 := l.cfg.IPv6
	// cmd6 adds an IPv6 command when the lab has IPv6.
	cmd6 := func(h Host, format string, args ...any) {
		if v6 {
			cmd(h, format, args...)
		}
	}
	if v6 {
		for _, p := range serverPrefixes6() {
			cmd(Server, "addr add %s dev eth0 nodad", p)
			l.addrs6[Server] = append(l.addrs6[Server], p.Addr())
		}
		cmd(Server, "route add default via %s", serverInet6().Addr())
		cmd(Internet, "addr add %s dev srv nodad", serverInet6())
		cmd(Peer, "addr add %s dev eth0 nodad", peerPrefix6())
		cmd(Peer, "route add default via %s", peerInet6().Addr())
		cmd(Internet, "addr add %s dev peer nodad", peerInet6())
		l.addrs6[Peer] = []netip.Addr{peerPrefix6().Addr()}
		l.addrs6[Internet] = []netip.Addr{serverInet6().Addr(), peerInet6().Addr()}
	}

	var nft []struct {
		h Host
		l layer
	}
	for i, s := range sites {
		// LAN: a bridge in the router, one veth per host.
		fmt.Fprintf(&links, "link add %s netns %s type bridge\n", lanIf, l.ns[s.router])
		cmd(s.router, "link set %s up", lanIf)
		cmd(s.router, "addr add %s dev %s", s.gw, lanIf)
		cmd6(s.router, "addr add %s dev %s nodad", s.gw6, lanIf)
		for j, h := range s.lan {
			veth(h, "eth0", s.router, h.short())
			cmd(s.router, "link set %s master %s", h.short(), lanIf)
			cmd(h, "addr add %s dev eth0", netip.PrefixFrom(s.hostAddrs[j], s.gw.Bits()))
			cmd(h, "route add default via %s", s.gw.Addr())
			l.addrs[h] = []netip.Addr{s.hostAddrs[j]}
			if v6 {
				cmd(h, "addr add %s dev eth0 nodad", netip.PrefixFrom(s.hostAddrs6[j], s.gw6.Bits()))
				cmd(h, "route add default via %s", s.gw6.Addr())
				l.addrs6[h] = []netip.Addr{s.hostAddrs6[j]}
			}
		}
		cmd(Internet, "addr add %s dev %s", s.inetSide, s.inetIf)
		l.addrs[Internet] = append(l.addrs[Internet], s.inetSide.Addr())
		if v6 {
			cmd(Internet, "addr add %s dev %s nodad", s.inetSide6, s.inetIf)
			l.addrs6[Internet] = append(l.addrs6[Internet], s.inetSide6.Addr())
			// The site's LAN prefix is routed to its router (or CGN).
			cmd(Internet, "route add %s via %s", s.gw6.Masked(), s.wanSide6.Addr())
		}
		timeout := l.cfg.UDPTimeout
		if timeout == 0 {
			timeout = defaultStreamTimeout
		}
		home := layer{kind: s.kind, wan: s.wanSide.Addr(), timeout: timeout, v6: v6}
		if i == 0 {
			home.hairpin = l.cfg.Hairpin
			home.loss = l.cfg.Loss
			for _, f := range l.cfg.Forwards {
				to := f.ToPort
				if to == 0 {
					to = f.Port
				}
				home.forwards = append(home.forwards, forward{proto: f.Proto, port: f.Port, to: l.addrs[f.To][0], toPort: to})
				if v6 {
					home.forwards6 = append(home.forwards6, forward{proto: f.Proto, port: to, to: l.addrs6[f.To][0], toPort: to})
				}
			}
		}
		if s.kind == OneToOne {
			home.oneToOne = s.hostAddrs[0]
		}
		if s.kind == PortSet {
			home.kind = PortRestricted
			home.ports = PortSetRange
		}
		var pub netip.Addr
		switch s.kind {
		case DoubleNAT, CarrierNAT:
			veth(s.router, wanIf, s.cgn, lanIf)
			cmd(s.router, "addr add %s dev %s", s.routerWAN, wanIf)
			cmd(s.router, "route add default via %s", s.cgnLAN.Addr())
			veth(s.cgn, wanIf, Internet, s.inetIf)
			cmd(s.cgn, "addr add %s dev %s", s.cgnLAN, lanIf)
			cmd(s.cgn, "addr add %s dev %s", s.wanSide, wanIf)
			cmd(s.cgn, "route add default via %s", s.inetSide.Addr())
			cmd6(s.router, "addr add %s dev %s nodad", s.routerWAN6, wanIf)
			cmd6(s.router, "route add default via %s", s.cgnLAN6.Addr())
			cmd6(s.cgn, "addr add %s dev %s nodad", s.cgnLAN6, lanIf)
			cmd6(s.cgn, "addr add %s dev %s nodad", s.wanSide6, wanIf)
			cmd6(s.cgn, "route add default via %s", s.inetSide6.Addr())
			cmd6(s.cgn, "route add %s via %s", s.gw6.Masked(), s.routerWAN6.Addr())
			if v6 {
				l.addrs6[s.router] = []netip.Addr{s.routerWAN6.Addr(), s.gw6.Addr()}
				l.addrs6[s.cgn] = []netip.Addr{s.wanSide6.Addr(), s.cgnLAN6.Addr()}
			}
			outer := layer{kind: PortRestricted, wan: s.wanSide.Addr(), timeout: timeout}
			if r, ok := s.kind.PortRange(); ok {
				outer.ports = r
			}
			home.kind = PortRestricted
			home.wan = s.routerWAN.Addr()
			l.addrs[s.router] = []netip.Addr{s.routerWAN.Addr(), s.gw.Addr()}
			l.addrs[s.cgn] = []netip.Addr{s.wanSide.Addr(), s.cgnLAN.Addr()}
			nft = append(nft, struct {
				h Host
				l layer
			}{s.cgn, outer})
			pub = s.wanSide.Addr()
		default:
			veth(s.router, wanIf, Internet, s.inetIf)
			cmd(s.router, "addr add %s dev %s", s.wanSide, wanIf)
			cmd(s.router, "route add default via %s", s.inetSide.Addr())
			l.addrs[s.router] = []netip.Addr{s.wanSide.Addr(), s.gw.Addr()}
			cmd6(s.router, "addr add %s dev %s nodad", s.wanSide6, wanIf)
			cmd6(s.router, "route add default via %s", s.inetSide6.Addr())
			if v6 {
				l.addrs6[s.router] = []netip.Addr{s.wanSide6.Addr(), s.gw6.Addr()}
			}
			pub = s.wanSide.Addr()
			if s.kind == NoNAT {
				cmd(Internet, "route add %s via %s", s.gw.Masked(), s.wanSide.Addr())
				pub = s.hostAddrs[0]
			}
		}
		nft = append(nft, struct {
			h Host
			l layer
		}{s.router, home})
		if i == 0 {
			l.pubA = pub
		} else {
			l.pubB = pub
		}
	}

	if err := runIP("", links.String()); err != nil {
		return err
	}
	// Routes last: an IPv6 route via a gateway needs its link up.
	for _, h := range hosts {
		b := cmds[h]
		if b == nil {
			continue
		}
		var first, routes strings.Builder
		for line := range strings.Lines(b.String()) {
			if strings.HasPrefix(line, "route ") {
				routes.WriteString(line)
			} else {
				first.WriteString(line)
			}
		}
		if err := runIP(l.ns[h], first.String()); err != nil {
			return fmt.Errorf("configuring %v: %w", h, err)
		}
		if routes.Len() > 0 {
			if err := runIP(l.ns[h], routes.String()); err != nil {
				return fmt.Errorf("routes of %v: %w", h, err)
			}
		}
	}
	if err := l.waitRunning(hosts); err != nil {
		return err
	}
	for _, n := range nft {
		if err := l.nft(n.h, n.l.ruleset()); err != nil {
			return err
		}
		if l.cfg.UDPTimeout > 0 {
			s := fmt.Sprint(int(l.cfg.UDPTimeout / time.Second))
			if err := l.sysctl(n.h, "net.netfilter.nf_conntrack_udp_timeout="+s,
				"net.netfilter.nf_conntrack_udp_timeout_stream="+s); err != nil {
				return err
			}
		}
	}
	return nil
}

// linkTimeout bounds the wait for links to come up. The kernel's link watch
// activates a new link's queue (until then it drops every packet) within
// about a second, longer when many namespaces are being built at once.
const linkTimeout = 10 * time.Second

// waitRunning waits until every interface of every host is operationally up
// (IFF_RUNNING), which the kernel reports only after the link watch has
// activated its transmit queue: packets sent earlier would be dropped.
func (l *Lab) waitRunning(hosts []Host) error {
	deadline := time.Now().Add(linkTimeout)
	for _, h := range hosts {
		for {
			var down []string
			err := l.Do(h, func() error {
				ifs, err := net.Interfaces()
				if err != nil {
					return err
				}
				for _, i := range ifs {
					if i.Flags&net.FlagLoopback == 0 && i.Flags&net.FlagRunning == 0 {
						down = append(down, i.Name)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(down) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("natlab: links of %v not up after %v: %v", h, linkTimeout, down)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// runIP runs `ip -batch -` (in namespace ns unless empty) with script on stdin.
func runIP(ns, script string) error {
	args := []string{"-force", "-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	c := exec.Command("ip", args...)
	c.Stdin = strings.NewReader(script)
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("natlab: ip %s: %w: %s\nscript:\n%s", strings.Join(args, " "), err, bytes.TrimSpace(out), script)
	}
	return nil
}

// sysctl sets kernel parameters ("net.ipv4.ip_forward=1") inside host's
// namespace by writing /proc/sys from a thread in that namespace (no
// dependency on procps). Keys that turn off what the kernel does not have
// (br_netfilter's, disable_ipv6) are skipped; any other missing key is an
// error.
func (l *Lab) sysctl(h Host, kv ...string) error {
	return l.Do(h, func() error {
		for _, s := range kv {
			k, v, _ := strings.Cut(s, "=")
			path := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			err := os.WriteFile(path, []byte(v), 0)
			if errors.Is(err, fs.ErrNotExist) && (strings.HasPrefix(k, "net.bridge.") || strings.HasSuffix(k, ".disable_ipv6")) {
				continue // no br_netfilter or no IPv6: nothing to turn off
			}
			if err != nil {
				return fmt.Errorf("natlab: sysctl %s in %v: %w", s, h, err)
			}
		}
		return nil
	})
}

// readSysctl reads a kernel parameter inside host's namespace.
func (l *Lab) readSysctl(h Host, key string) (string, error) {
	var v []byte
	err := l.Do(h, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
		return err
	})
	return strings.TrimSpace(string(v)), err
}

// nft loads an nft script into host's namespace.
func (l *Lab) nft(h Host, script string) error {
	c := exec.Command("ip", "netns", "exec", l.ns[h], "nft", "-f", "-")
	c.Stdin = strings.NewReader(script)
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("natlab: nft in %v: %w: %s\nscript:\n%s", h, err, bytes.TrimSpace(out), script)
	}
	return nil
}
