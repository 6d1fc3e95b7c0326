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
// -check validates a file and exits (status 1 and the errors, each naming its
// line, if it is bad).
//
// Signals: SIGHUP reloads the file (routes and records are swapped atomically;
// a bad file is rejected and the running configuration kept); SIGINT and
// SIGTERM shut down gracefully within -shutdown-timeout.
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

// run is main without the exit, for tests: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `file` (default: the built-in loopback demo)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	printDefault := fs.Bool("print-default-config", false, "print the built-in default configuration and exit")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "how long a graceful shutdown may take")
	if err := fs.Parse(args); err != nil {
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
	if err != nil {
		fmt.Fprintln(stderr, err)
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
	for {
		select {
		case <-hup:
			next, err := load()
			if err != nil {
				log.Error("reload rejected; still serving the previous configuration", "err", err)
				continue
			}
			if err := gw.reload(next); err != nil {
				log.Error("reload rejected; still serving the previous configuration", "err", err)
				continue
			}
			log.Info("configuration reloaded")
		case <-ctx.Done():
			log.Info("shutting down", "deadline", shutdownTimeout.String())
			sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
			err := gw.shutdown(sctx)
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("shutdown", "err", err)
				return 1
			}
			return 0
		}
	}
}
