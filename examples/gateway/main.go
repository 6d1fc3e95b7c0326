// Command gateway runs the whole hairpin story from one configuration file:
// it probes the NAT (public address, hairpinning, mapping lifetime), serves
// split-horizon DNS (LAN clients get LAN addresses, everyone else the public
// address), routes one public port to many backends by name, and runs a TURN
// relay that announces the public address.
//
// Usage:
//
//	gateway [-config FILE] [-check] [-print-default-config]
//
// With no -config it runs a built-in default on loopback ports, with demo
// backends, and prints what to try. -print-default-config prints that default;
// -check does everything a start does short of serving: it parses the file,
// builds every part (zone files, TLS certificates and keys, TSIG secrets)
// and refuses two listeners on one address, then exits (status 1 and the
// errors, each naming its key and line, if anything is wrong).
//
// Signals: SIGHUP reloads the file: DNS settings, records, routes, the probe
// settings and the credentials endpoint's settings apply live, and the log
// names by key path every change that waits for a restart (listeners, the
// relay); a bad file is rejected and the running configuration kept. SIGINT
// and SIGTERM shut down gracefully within -shutdown-timeout. If a part stops
// serving, the gateway shuts down and exits with status 1.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
)

//go:embed default.yaml
var defaultConfig []byte

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// description is the one line -h prints first.
const description = "gateway: split-horizon DNS, SNI proxy, TURN relay and NAT probe for a site behind a NAT router, from one YAML file."

// run is main without the exit, for tests: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `file` (default: the built-in loopback demo)")
	check := fs.Bool("check", false, "do everything a start does short of serving (parse, load zone files, certificates and keys), then exit")
	printDefault := fs.Bool("print-default-config", false, "print the built-in default configuration and exit")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "how long a graceful shutdown may take")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), description)
		fmt.Fprintln(fs.Output(), "\nUsage: gateway [-config FILE] [-check] [-print-default-config] [-shutdown-timeout D]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gateway: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if *printDefault {
		stdout.Write(defaultConfig)
		return 0
	}
	load := func() (*config.File, error) {
		if *path == "" {
			return config.Parse(defaultConfig)
		}
		return config.Load(*path)
	}
	cfg, err := load()
	if err == nil && *check {
		err = checkBuild(cfg)
	}
	if err != nil {
		// One error per line for a person at a terminal; each names its key and line.
		for _, e := range config.Errors(err) {
			fmt.Fprintln(stderr, e)
		}
		return 1
	}
	if *check {
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}
	log := cfg.Log.Logger(stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	gw, err := start(ctx, cfg, log)
	if err != nil {
		log.Error("gateway did not start", "err", err)
		return 1
	}
	if *path == "" {
		printQuickstart(stdout, cfg)
	}
	log.Info("gateway ready")
	shutdown := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
		defer cancel()
		err := gw.shutdown(sctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	for {
		select {
		case <-hup:
			next, err := load()
			if err == nil {
				err = checkBuild(next)
			}
			if err != nil {
				log.Error("reload rejected; still serving the previous configuration", "err", err)
				continue
			}
			restart, err := gw.reload(next)
			if err != nil {
				log.Error("reload rejected; still serving the previous configuration", "err", err)
				continue
			}
			if len(restart) > 0 {
				log.Warn("configuration reloaded; these keys changed but take effect at the next restart", "restart", restart)
			} else {
				log.Info("configuration reloaded")
			}
		case err := <-gw.failed:
			log.Error("a part stopped serving; shutting down", "err", err)
			if serr := shutdown(); serr != nil {
				log.Error("shutdown", "err", serr)
			}
			return 1
		case <-ctx.Done():
			log.Info("shutting down", "deadline", shutdownTimeout.String())
			if err := shutdown(); err != nil {
				log.Error("shutdown", "err", err)
				return 1
			}
			return 0
		}
	}
}
