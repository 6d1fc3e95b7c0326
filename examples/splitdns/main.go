// Command splitdns serves split-horizon DNS from the `dns:` section of a
// hairpin configuration file: LAN clients get LAN addresses, everyone else
// the public address, and names outside the local data are forwarded only
// for views with recursion.
//
//	splitdns -config hairpin.yaml [-public 203.0.113.1]
//	splitdns -config hairpin.yaml -explain 192.168.1.7
//
// Records may contain {public}; -public sets it (the gateway learns it by
// probing the NAT instead). SIGHUP is not handled: restart to reload.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/hairpin-go/hairpin/examples/internal/config"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "splitdns:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "configuration file (YAML with a dns: section)")
	public := flag.String("public", "", "public address substituted for {public} in records")
	explain := flag.String("explain", "", "print which view a client `address` gets and why, then exit")
	shutdownTimeout := flag.Duration("shutdown-timeout", 5*time.Second, "how long a graceful shutdown may take")
	flag.CommandLine.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprintln(out, "splitdns: split-horizon DNS from the dns: section of a hairpin configuration (see example.yaml).")
		fmt.Fprintln(out, "\nUsage: splitdns -config FILE [-public IP] [-explain IP] [-shutdown-timeout D]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *path == "" {
		flag.Usage()
		return errors.New("-config is required")
	}
	f, err := config.Load(*path)
	if err != nil {
		return err
	}
	if f.DNS == nil {
		return fmt.Errorf("%s has no dns: section", *path)
	}
	log := f.Log.Logger(os.Stderr)
	srv, setPublic, err := f.DNS.Build(log)
	if err != nil {
		return err
	}
	if *public != "" {
		a, err := netip.ParseAddr(*public)
		if err != nil {
			return fmt.Errorf("-public: %w", err)
		}
		if err := setPublic(a); err != nil {
			return err
		}
	}
	if *explain != "" {
		a, err := netip.ParseAddr(*explain)
		if err != nil {
			return fmt.Errorf("-explain: %w", err)
		}
		fmt.Println(srv.Explain(a, netip.Addr{}))
		return srv.Close()
	}
	listen := f.DNS.Listen
	if len(listen) == 0 {
		listen = []string{"127.0.0.1:53"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, len(listen))
	var wg sync.WaitGroup
	for _, a := range listen {
		wg.Add(1)
		// One UDP socket per CPU with SO_REUSEPORT, and TCP, on each address.
		go func() { defer wg.Done(); errc <- srv.ListenAndServe(a) }()
		log.Info("splitdns: listening", "addr", a)
	}
	for _, v := range srv.Views {
		log.Info("splitdns: view", "name", v.Name, "networks", v.Networks, "recursion", v.Recursion, "zones", v.Records.Zones())
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, dnssplit.ErrServerClosed) {
			err = nil
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	serr := srv.Shutdown(sctx)
	wg.Wait()
	st := srv.Stats()
	log.Info("splitdns: stopped", "queries", st.Queries, "cacheHits", st.CacheHits, "stale", st.StaleServed)
	return errors.Join(err, serr)
}
