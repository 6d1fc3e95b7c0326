package natlab

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
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
		if s.kind == DoubleNAT {
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
		switch h {
		case Internet, Router, CGN, SiteBRouter, SiteBCGN:
			kv = append(kv, "net.ipv4.ip_forward=1")
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

	var nft []struct {
		h Host
		l layer
	}
	for i, s := range sites {
		// LAN: a bridge in the router, one veth per host.
		fmt.Fprintf(&links, "link add %s netns %s type bridge\n", lanIf, l.ns[s.router])
		cmd(s.router, "link set %s up", lanIf)
		cmd(s.router, "addr add %s dev %s", s.gw, lanIf)
		for j, h := range s.lan {
			veth(h, "eth0", s.router, h.short())
			cmd(s.router, "link set %s master %s", h.short(), lanIf)
			cmd(h, "addr add %s dev eth0", netip.PrefixFrom(s.hostAddrs[j], s.gw.Bits()))
			cmd(h, "route add default via %s", s.gw.Addr())
			l.addrs[h] = []netip.Addr{s.hostAddrs[j]}
		}
		cmd(Internet, "addr add %s dev %s", s.inetSide, s.inetIf)
		l.addrs[Internet] = append(l.addrs[Internet], s.inetSide.Addr())
		timeout := l.cfg.UDPTimeout
		if timeout == 0 {
			timeout = defaultStreamTimeout
		}
		home := layer{kind: s.kind, wan: s.wanSide.Addr(), timeout: timeout}
		if i == 0 {
			home.hairpin = l.cfg.Hairpin
			for _, f := range l.cfg.Forwards {
				to := f.ToPort
				if to == 0 {
					to = f.Port
				}
				home.forwards = append(home.forwards, forward{proto: f.Proto, port: f.Port, to: l.addrs[f.To][0], toPort: to})
			}
		}
		if s.kind == OneToOne {
			home.oneToOne = s.hostAddrs[0]
		}
		var pub netip.Addr
		switch s.kind {
		case DoubleNAT:
			veth(s.router, wanIf, s.cgn, lanIf)
			cmd(s.router, "addr add %s dev %s", s.routerWAN, wanIf)
			cmd(s.router, "route add default via %s", s.cgnLAN.Addr())
			veth(s.cgn, wanIf, Internet, s.inetIf)
			cmd(s.cgn, "addr add %s dev %s", s.cgnLAN, lanIf)
			cmd(s.cgn, "addr add %s dev %s", s.wanSide, wanIf)
			cmd(s.cgn, "route add default via %s", s.inetSide.Addr())
			home.kind = PortRestricted
			home.wan = s.routerWAN.Addr()
			l.addrs[s.router] = []netip.Addr{s.routerWAN.Addr(), s.gw.Addr()}
			l.addrs[s.cgn] = []netip.Addr{s.wanSide.Addr(), s.cgnLAN.Addr()}
			nft = append(nft, struct {
				h Host
				l layer
			}{s.cgn, layer{kind: PortRestricted, wan: s.wanSide.Addr(), timeout: timeout}})
			pub = s.wanSide.Addr()
		default:
			veth(s.router, wanIf, Internet, s.inetIf)
			cmd(s.router, "addr add %s dev %s", s.wanSide, wanIf)
			cmd(s.router, "route add default via %s", s.inetSide.Addr())
			l.addrs[s.router] = []netip.Addr{s.wanSide.Addr(), s.gw.Addr()}
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
	for _, h := range hosts {
		if b := cmds[h]; b != nil {
			if err := runIP(l.ns[h], b.String()); err != nil {
				return fmt.Errorf("configuring %v: %w", h, err)
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

// sysctl sets kernel parameters inside host's namespace. Unknown keys (such
// as the bridge ones without br_netfilter) are ignored.
func (l *Lab) sysctl(h Host, kv ...string) error {
	args := append([]string{"netns", "exec", l.ns[h], "sysctl", "-q", "-e", "-w"}, kv...)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("natlab: sysctl in %v: %w: %s", h, err, bytes.TrimSpace(out))
	}
	return nil
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
