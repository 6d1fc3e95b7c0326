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
	fs.Usage = func() {
		fmt.Fprintln(stderr, "natcheck reports how the NAT in front of this host behaves (RFC 4787 mapping, filtering, hairpinning, lifetime).")
		fmt.Fprintln(stderr, "usage: natcheck [-json] [-timeout 5s] [-tcp] [-lifetime] [-6] [-no-hairpin] [-config FILE] [server ...]")
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
	c := &nat.Client{Servers: fs.Args(), Timeout: *timeout, TCP: *tcp, Lifetime: *lifetime, NoHairpin: *noHairpin}
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
		if *portmap {
			pm := &nat.PortMapper{Timeout: *timeout}
			pr, perr := pm.Probe(ctx)
			if perr != nil {
				fmt.Fprintf(stdout, "port mapping: %v\n", perr)
			} else {
				fmt.Fprintf(stdout, "port mapping: %v\n", pr)
			}
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
