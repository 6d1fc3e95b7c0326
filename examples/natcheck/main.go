// Command natcheck reports how the NAT in front of this host behaves.
//
// Usage:
//
//	natcheck [-json] [-timeout 5s] [-tcp] [-lifetime] [-6] [-no-hairpin] [-config FILE] [server ...]
//
// Servers are "host:port" or "host" (port 3478). Without servers it uses
// nat.stun from -config, else a short list of well-known public STUN servers.
// An RFC 5780 server (two IPs, two ports) is needed to measure filtering; with
// plain servers the mapping behaviour comes from comparing their answers.
//
// By default it prints a table; -json prints the library's nat.Report as JSON
// (encoding/json of the Report, so nat's JSON is the one documented format:
// behaviours as text, unknown answers as null, durations in nanoseconds).
//
// Exit status: 0 when a report was made, 1 when no server answered, 2 for
// usage errors.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/nat"
)

// defaultServers are public STUN servers. The first is RFC 5780 capable
// (stuntman); the others are plain, and compared for the mapping behaviour.
var defaultServers = []string{
	"stun.stunprotocol.org:3478",
	"stun.l.google.com:19302",
	"stun.cloudflare.com:3478",
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("natcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := fs.Duration("timeout", nat.DefaultTimeout, "time limit for the UDP (and, separately, TCP) tests")
	tcp := fs.Bool("tcp", false, "also measure the TCP mapping behaviour")
	lifetime := fs.Bool("lifetime", false, "measure the UDP mapping lifetime (takes up to a few minutes)")
	v6 := fs.Bool("6", false, "probe over IPv6")
	noHairpin := fs.Bool("no-hairpin", false, "skip the hairpin test")
	cfgPath := fs.String("config", "", "read nat.stun and nat.hairpin from this configuration file")
	portmap := fs.Bool("portmap", false, "also ask the default gateway which port-mapping protocols (PCP, NAT-PMP, UPnP IGD) it answers")
	mapTest := fs.Bool("map-test", false, "map a temporary UDP port on the router (PCP, NAT-PMP or UPnP IGD), check from the STUN server's other address that the internet reaches it, and delete it (implies -portmap)")
	lifetimeMax := fs.Duration("lifetime-max", 0, "with -lifetime: the longest idle time tested (default 2m)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "natcheck reports how the NAT in front of this host behaves (RFC 4787 mapping, filtering, hairpinning, lifetime).")
		fmt.Fprintln(stderr, "usage: natcheck [-json] [-timeout 5s] [-tcp] [-lifetime [-lifetime-max 2m]] [-6] [-no-hairpin] [-portmap] [-map-test] [-config FILE] [server ...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "natcheck: -timeout must be positive")
		return 2
	}
	if *lifetimeMax < 0 {
		fmt.Fprintln(stderr, "natcheck: -lifetime-max must not be negative")
		return 2
	}
	c := &nat.Client{Servers: fs.Args(), Timeout: *timeout, TCP: *tcp, Lifetime: *lifetime, NoHairpin: *noHairpin,
		LifetimeMax: *lifetimeMax}
	if *lifetime {
		c.LifetimeProgress = lifetimeProgress(stderr)
	}
	*portmap = *portmap || *mapTest
	if *cfgPath != "" {
		f, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		if f.NAT != nil {
			if fc := f.NAT.Client(nil); fc != nil {
				if len(c.Servers) == 0 {
					c.Servers = fc.Servers
				}
				c.NoHairpin = c.NoHairpin || fc.NoHairpin
				c.TCP = c.TCP || fc.TCP
				if fc.Network == "udp6" {
					*v6 = true
				}
			}
		}
	}
	if len(c.Servers) == 0 {
		c.Servers = defaultServers
	}
	if *v6 {
		c.Network = "udp6"
	}
	rep, err := c.Probe(ctx)
	if rep == nil {
		fmt.Fprintf(stderr, "natcheck: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "natcheck: %v\n", err)
			return 1
		}
	} else {
		printTable(stdout, rep, *lifetime)
	}
	if *portmap {
		// With -json, stdout holds only the report: these lines go to stderr.
		w := stdout
		if *asJSON {
			w = stderr
		}
		pm := &nat.PortMapper{Timeout: *timeout}
		pr, perr := pm.Probe(ctx)
		if perr != nil {
			fmt.Fprintf(w, "port mapping: %v\n", perr)
		} else {
			fmt.Fprintf(w, "port mapping: %v\n", pr)
		}
		if *mapTest && rep.UDP {
			fmt.Fprintf(w, "port mapping test: %s\n", mapCheck(ctx, c, pm))
		}
	}
	if errors.Is(err, nat.ErrNoAnswer) {
		fmt.Fprintln(stderr, "natcheck: no STUN server answered")
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "natcheck: %v\n", err)
		return 1
	}
	return 0
}

func addr[T interface {
	IsValid() bool
	String() string
}](a T) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func dur(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}

func printTable(w io.Writer, r *nat.Report, lifetime bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("UDP", map[bool]string{true: "yes", false: "no answer"}[r.UDP])
	row("Public address", orDash(addr(r.Public)))
	row("Behind NAT", r.BehindNAT)
	row("Mapping", r.Mapping)
	row("Filtering", r.Filtering)
	row("Hairpinning", r.Hairpinning)
	row("Port preserved", r.PortPreserved)
	row("Mapping varies by server", r.MappingVariesByServer)
	if r.CarrierGradeNAT == nat.Yes || r.DoubleNAT == nat.Yes {
		row("Carrier-grade NAT", r.CarrierGradeNAT)
		row("Double NAT", r.DoubleNAT)
	}
	if r.InboundIPv4 != nat.Unknown {
		v := r.InboundIPv4.String()
		if r.InboundIPv4Reason != "" {
			v += " (" + r.InboundIPv4Reason + ")"
		}
		row("Inbound IPv4", v)
	}
	row("Classic label", r.Classic)
	srv := r.Server.RFC5780.String()
	if len(r.Server.Problems) > 0 {
		srv += " (" + strings.Join(r.Server.Problems, "; ") + ")"
	}
	row("Server "+orDash(addr(r.Server.Addr)), "RFC 5780 "+srv)
	if lifetime {
		if r.MappingLifetime > 0 {
			v := fmt.Sprintf("alive after %v idle", r.MappingLifetime)
			if r.MappingExpired > 0 {
				v += fmt.Sprintf(", gone after %v", r.MappingExpired)
			} else if r.MappingLifetimeAtLeast {
				v += " (the longest tested: it never expired)"
			}
			row("Mapping lifetime", v)
			row("Suggested keepalive", r.SuggestedKeepalive)
		} else {
			row("Mapping lifetime", "unknown")
		}
	}
	if r.TCP != nil {
		row("TCP mapping", r.TCP.Mapping)
		row("TCP public address", orDash(addr(r.TCP.Public)))
	}
	row("Took", r.Duration.Round(time.Millisecond))
	tw.Flush()
	if r.InboundIPv4 == nat.No {
		fmt.Fprintln(w, "\nNo port forward can make a server here reachable over IPv4. Publish it through an edge:")
		fmt.Fprintln(w, "a host with a public address runs proxy.Edge (the gateway's edge: section), and this site runs")
		fmt.Fprintln(w, "proxy.Agent (the gateway's tunnel: section), which dials out to it; see the proxy package docs.")
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TEST\tLOCAL\tSERVER\tCHANGE\tANSWER\tMAPPED\tFROM\tRTT\tNOTE")
	all := r.Probes
	if r.TCP != nil {
		all = append(append([]nat.Evidence(nil), all...), r.TCP.Probes...)
	}
	for _, p := range all {
		change := "-"
		switch {
		case p.ChangeIP && p.ChangePort:
			change = "ip+port"
		case p.ChangePort:
			change = "port"
		case p.ChangeIP:
			change = "ip"
		}
		ans := "no"
		if p.Answered {
			ans = "yes"
		} else if p.ErrorCode != 0 {
			ans = fmt.Sprintf("error %d", p.ErrorCode)
		}
		note := p.Note
		if len(p.Stray) > 0 {
			var strays []string
			for _, a := range p.Stray {
				strays = append(strays, a.String())
			}
			note = strings.TrimSpace(note + " ignored answers from " + strings.Join(strays, ","))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Test, orDash(addr(p.Local)), orDash(addr(p.Server)), change, ans,
			orDash(addr(p.Mapped)), orDash(addr(p.From)), orDash(dur(p.RTT)), note)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// mapCheck maps a temporary UDP port, checks it from the outside, and
// deletes it; it returns the one-line result.
func mapCheck(ctx context.Context, c *nat.Client, pm *nat.PortMapper) string {
	pc, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return err.Error()
	}
	defer pc.Close()
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	m, err := pm.Map(ctx, nat.TransportUDP, port, 0, 2*time.Minute)
	if err != nil {
		return fmt.Sprintf("no mapping: %v", err)
	}
	defer func() { _ = pm.Close() }()
	what := fmt.Sprintf("UDP %v -> :%d by %v", m.External, port, m.Protocol)
	res, err := c.CheckPortMapping(ctx, pc, m.External)
	switch {
	case err != nil:
		return fmt.Sprintf("%s: not checked: %v", what, err)
	case res.Reachable:
		return fmt.Sprintf("%s: reachable from the internet (answer from %v, an address this host never sent to)", what, res.From)
	case m.External.Addr().IsValid() && m.External.Addr() != res.SentTo.Addr():
		return fmt.Sprintf("%s: NOT reachable: the internet sees this host as %v, not the router's %v (a second NAT in front of the router)",
			what, res.SentTo.Addr(), m.External.Addr())
	}
	return fmt.Sprintf("%s: NOT reachable from the internet (%v sent to %v from its other address; nothing arrived)", what, res.Server, res.SentTo)
}

// lifetimeProgress shows the lifetime search on w: a line per checked idle
// time, and on a terminal the current wait on a line that is overwritten.
func lifetimeProgress(w io.Writer) func(nat.LifetimeStep) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil {
			tty = fi.Mode()&os.ModeCharDevice != 0
		}
	}
	return func(s nat.LifetimeStep) {
		switch {
		case !s.Checked && tty:
			fmt.Fprintf(w, "\r\x1b[Klifetime: waiting for a mapping idle %v (at most %v)...", s.Idle, s.Max)
		case !s.Checked:
		case tty:
			fmt.Fprintf(w, "\r\x1b[Klifetime: idle %v: %s\n", s.Idle, aliveWord(s.Alive))
		default:
			fmt.Fprintf(w, "natcheck: lifetime: idle %v: %s\n", s.Idle, aliveWord(s.Alive))
		}
	}
}

func aliveWord(alive bool) string {
	if alive {
		return "mapping alive"
	}
	return "mapping gone"
}
