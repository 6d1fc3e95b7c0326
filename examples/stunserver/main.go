// Command stunserver runs the nat package's RFC 5780 STUN server over UDP and
// TCP.
//
// Usage:
//
//	stunserver -primary IP:PORT [-alternate IP:PORT] [-rate N] [-v]
//	stunserver -config FILE
//
// With -config it serves the nat.server section of the (gateway) configuration
// file; flags override it. With -alternate it listens on four addresses (both IPs × both ports) and
// answers the RFC 5780 NAT behaviour tests; without, it is a plain STUN
// server. The alternate address must differ from the primary in IP and port.
// It stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/nat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("stunserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	primary := fs.String("primary", "", "primary address IP:PORT (required)")
	alternate := fs.String("alternate", "", "alternate address IP:PORT for RFC 5780 (differs in IP and port)")
	rate := fs.Int("rate", 0, "requests per second per source IP (0: default, negative: unlimited)")
	verbose := fs.Bool("v", false, "log every request at debug level")
	cfgPath := fs.String("config", "", "serve nat.server from this configuration file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "stunserver runs an RFC 5780 STUN server (NAT behaviour discovery) over UDP and TCP.")
		fmt.Fprintln(stderr, "usage: stunserver -primary IP:PORT [-alternate IP:PORT] [-rate N] [-v] [-config FILE]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *cfgPath != "" {
		f, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		if f.NAT == nil || f.NAT.Server == nil {
			fmt.Fprintf(stderr, "stunserver: %s has no nat.server section\n", *cfgPath)
			return 2
		}
		if *primary == "" {
			*primary = f.NAT.Server.Primary
		}
		if *alternate == "" {
			*alternate = f.NAT.Server.Alternate
		}
		if *rate == 0 {
			*rate = f.NAT.Server.RateLimit
		}
	}
	if *primary == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: stunserver -primary IP:PORT [-alternate IP:PORT] [-rate N] [-v] [-config FILE]")
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s := &nat.Server{RateLimit: *rate, Logger: logger}
	var err error
	if s.Primary, err = netip.ParseAddrPort(*primary); err != nil {
		fmt.Fprintf(stderr, "stunserver: -primary: %v\n", err)
		return 2
	}
	if *alternate != "" {
		if s.Alternate, err = netip.ParseAddrPort(*alternate); err != nil {
			fmt.Fprintf(stderr, "stunserver: -alternate: %v\n", err)
			return 2
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe("") }()
	logger.Info("stunserver: serving", "primary", s.Primary, "alternate", s.Alternate)
	select {
	case err = <-done:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		err = <-done
	}
	if err != nil && !errors.Is(err, nat.ErrServerClosed) {
		logger.Error("stunserver: stopped", "err", err)
		return 1
	}
	st := s.Stats()
	logger.Info("stunserver: stopped", "requests", st.Requests, "responses", st.Responses, "rateLimited", st.RateLimited)
	return 0
}
