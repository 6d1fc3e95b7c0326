// Command splitdns serves split-horizon DNS from the `dns:` section of a
// hairpin configuration file: LAN clients get LAN addresses, everyone else
// the public address, and names outside the local data are forwarded only
// for views with recursion.
//
//	splitdns -config hairpin.yaml [-public 203.0.113.1] [-check] [-shutdown-timeout D]
//	splitdns -config hairpin.yaml -explain 192.168.1.7
//
// example.yaml next to this file is a commented starting point. Records may
// contain {public}; -public sets it (the gateway learns it by probing the
// NAT instead).
//
// Signals: SIGHUP re-reads the file and applies every dns: setting but
// dns.listen while serving, as the gateway does (views and records swap in
// place; upstreams, rate limit, transfer ACL and TSIG keys, cache and the
// rest swap the server on the same sockets); the log names by key path the
// changes that wait for a restart, and a bad file is rejected with the
// running configuration kept. SIGINT and SIGTERM shut down gracefully
// within -shutdown-timeout. If a socket stops serving, splitdns exits with
// status 1.
package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/daemon"
	"github.com/hairpin-go/hairpin/examples/internal/serve"
)

// description is the one line -h prints first.
const description = "splitdns: split-horizon DNS from the dns: section of a hairpin configuration (see example.yaml)."

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := daemon.New("splitdns", description,
		"splitdns -config FILE [-public IP] [-explain IP] [-check] [-shutdown-timeout D]", stdout, stderr)
	publicFlag := cmd.Flags.String("public", "", "public `address` substituted for {public} in records")
	explain := cmd.Flags.String("explain", "", "print which view a client `address` gets and why, then exit")
	if code, ok := cmd.Parse(args); !ok {
		return code
	}
	if cmd.Config == "" {
		return cmd.Usagef("-config is required")
	}
	var public netip.Addr
	if *publicFlag != "" {
		a, err := netip.ParseAddr(*publicFlag)
		if err != nil {
			return cmd.Usagef("-public: want an IP address: %v", err)
		}
		public = a
	}
	load := func() (*config.File, error) {
		f, err := config.Load(cmd.Config)
		if err == nil && f.DNS == nil {
			err = fmt.Errorf("config: %s has no dns: section", cmd.Config)
		}
		return f, err
	}
	f, err := load()
	if err != nil {
		return cmd.Fail(err)
	}
	if *explain != "" {
		a, err := netip.ParseAddr(*explain)
		if err != nil {
			return cmd.Usagef("-explain: want an IP address: %v", err)
		}
		srv, setPublic, err := f.DNS.Build(config.Log{}.Logger(io.Discard))
		if err == nil && public.IsValid() {
			err = setPublic(public)
		}
		if err != nil {
			return cmd.Fail(err)
		}
		fmt.Fprintln(stdout, srv.Explain(a, netip.Addr{}))
		_ = srv.Close()
		return 0
	}
	if len(f.DNS.Listen) == 0 {
		f.DNS.Listen = []string{"127.0.0.1:53"}
	}
	log := f.Log.Logger(stderr)

	sig := daemon.Notify()
	defer sig.Stop()
	stop, stopped := context.WithCancel(context.Background())
	defer stopped()
	failed := make(chan error, 1)
	var failOnce sync.Once
	fail := func(part string, err error) {
		if stop.Err() != nil {
			return // shutting down: sockets closing is expected
		}
		failOnce.Do(func() { failed <- fmt.Errorf("splitdns: %s stopped serving: %w", part, err) })
	}
	d, err := serve.NewDNS(f.DNS, public, log, fail, stop)
	if err == nil && cmd.Check {
		_ = d.Server().Close()
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}
	if err != nil {
		return cmd.Fail(err)
	}
	if err := d.Listen(f.DNS.Listen); err != nil {
		_ = d.Server().Close()
		return cmd.Fail(err)
	}
	for _, a := range d.Addrs() {
		log.Info("splitdns: listening", "addr", a.String())
	}
	for _, v := range d.Server().Views {
		log.Info("splitdns: view", "name", v.Name, "networks", v.Networks, "recursion", v.Recursion, "zones", v.Records.Zones())
	}

	cur := f
	reload := func() ([]string, error) {
		next, err := load()
		if err != nil {
			return nil, err
		}
		if len(next.DNS.Listen) == 0 {
			next.DNS.Listen = []string{"127.0.0.1:53"}
		}
		apply, err := d.Prepare(next.DNS, public)
		if err != nil {
			return nil, err
		}
		if err := apply(); err != nil {
			return nil, err
		}
		restart := config.Restart(config.Within(config.Changed(cur, next), []string{"dns", "log"}), serve.DNSLiveKeys())
		// What waits for a restart keeps its running value, so that the
		// next reload names it again until the restart.
		next.DNS.Listen, next.Log = cur.DNS.Listen, cur.Log
		cur = next
		return restart, nil
	}
	return sig.Serve(daemon.Service{
		Name:    "splitdns",
		Log:     log,
		Timeout: cmd.ShutdownTimeout,
		Reload:  reload,
		Shutdown: func(ctx context.Context) error {
			stopped()
			err := d.Shutdown(ctx)
			st := d.Stats()
			log.Info("splitdns: stopped", "queries", st.Queries, "cacheHits", st.CacheHits, "stale", st.StaleServed)
			return err
		},
		Failed: failed,
	})
}
