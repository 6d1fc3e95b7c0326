// Command stunserver runs the nat package's RFC 5780 STUN server over UDP and
// TCP.
//
// Usage:
//
//	stunserver -primary IP:PORT [-alternate IP:PORT] [-rate N] [-v] [-shutdown-timeout D]
//	stunserver -config FILE [-check]
//
// With -config it serves the nat.server section of the (gateway) configuration
// file; flags override it. With -alternate it listens on four addresses (both IPs × both ports) and
// answers the RFC 5780 NAT behaviour tests; without, it is a plain STUN
// server. The alternate address must differ from the primary in IP and port.
// SIGINT and SIGTERM stop it within -shutdown-timeout; SIGHUP is logged and
// ignored (restart it to apply a new configuration).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/daemon"
	"github.com/hairpin-go/hairpin/nat"
)

// description is the one line -h prints first.
const description = "stunserver: an RFC 5780 STUN server (NAT behaviour discovery) over UDP and TCP."

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := daemon.New("stunserver", description,
		"stunserver -primary IP:PORT [-alternate IP:PORT] [-rate N] [-v] [-config FILE] [-check] [-shutdown-timeout D]", stdout, stderr)
	fs := cmd.Flags
	primary := fs.String("primary", "", "primary address IP:PORT (required without -config)")
	alternate := fs.String("alternate", "", "alternate address IP:PORT for RFC 5780 (differs in IP and port)")
	rate := fs.Int("rate", 0, "requests per second per source IP (0: default, negative: unlimited)")
	verbose := fs.Bool("v", false, "log every request at debug level")
	if code, ok := cmd.Parse(args); !ok {
		return code
	}
	if cmd.Config != "" {
		f, err := config.Load(cmd.Config)
		if err != nil {
			cmd.Fail(err)
			return 2
		}
		if f.NAT == nil || f.NAT.Server == nil {
			return cmd.Usagef("%s has no nat.server section", cmd.Config)
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
	if *primary == "" {
		return cmd.Usagef("-primary or -config is required")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s := &nat.Server{RateLimit: *rate, Logger: logger}
	var err error
	if s.Primary, err = netip.ParseAddrPort(*primary); err != nil {
		return cmd.Usagef("-primary: want IP:PORT: %v", err)
	}
	if *alternate != "" {
		if s.Alternate, err = netip.ParseAddrPort(*alternate); err != nil {
			return cmd.Usagef("-alternate: want IP:PORT: %v", err)
		}
	}
	if cmd.Check {
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}
	sig := daemon.Notify()
	defer sig.Stop()
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe("") }()
	failed := make(chan error, 1)
	stopping := make(chan struct{})
	go func() {
		select {
		case err := <-done:
			done <- err // for Shutdown
			failed <- fmt.Errorf("stunserver: stopped serving: %w", err)
		case <-stopping:
		}
	}()
	logger.Info("stunserver: serving", "primary", s.Primary, "alternate", s.Alternate)
	return sig.Serve(daemon.Service{
		Name:    "stunserver",
		Log:     logger,
		Timeout: cmd.ShutdownTimeout,
		Shutdown: func(ctx context.Context) error {
			close(stopping)
			err := s.Shutdown(ctx)
			if serr := <-done; !errors.Is(serr, nat.ErrServerClosed) && err == nil {
				err = serr
			}
			st := s.Stats()
			logger.Info("stunserver: stopped", "requests", st.Requests, "responses", st.Responses, "rateLimited", st.RateLimited)
			return err
		},
		Failed: failed,
	})
}
