// Command gateway runs the whole hairpin story from one configuration file:
// it probes the NAT (public address, hairpinning, mapping lifetime), serves
// split-horizon DNS (LAN clients get LAN addresses, everyone else the public
// address), routes one public port to many backends by name, and runs a TURN
// relay that announces the public address.
//
// Usage:
//
//	gateway [-config FILE] [-check] [-print-default-config] [-shutdown-timeout D]
//
// With no -config it runs a built-in default on loopback ports, with demo
// backends, and prints what to try. -print-default-config prints that default;
// -check does everything a start does short of serving: it parses the file,
// builds every part (zone files, TLS certificates and keys, TSIG secrets)
// and refuses two listeners on one address, then exits (status 1 and the
// errors, each naming its key and line, if anything is wrong).
//
// Signals: SIGHUP reloads the file: DNS settings and records, proxy routes,
// limits and timeouts, relay.public, the relay's secrets and users, the probe
// settings and the credentials endpoint's settings apply live, and the log
// names by key path every change that waits for a restart (listeners, the
// relay's other settings); a bad file is rejected and the running configuration kept. SIGINT
// and SIGTERM shut down gracefully within -shutdown-timeout. If a part stops
// serving, the gateway shuts down and exits with status 1.
package main

import (
	_ "embed"
	"fmt"
	"io"
	"os"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/daemon"
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
	cmd := daemon.New("gateway", description,
		"gateway [-config FILE] [-check] [-print-default-config] [-shutdown-timeout D]", stdout, stderr)
	printDefault := cmd.Flags.Bool("print-default-config", false, "print the built-in default configuration and exit")
	if code, ok := cmd.Parse(args); !ok {
		return code
	}
	if *printDefault {
		stdout.Write(defaultConfig)
		return 0
	}
	path := cmd.Config
	load := func() (*config.File, error) {
		if path == "" {
			return config.Parse(defaultConfig)
		}
		return config.Load(path)
	}
	cfg, err := load()
	if err == nil && cmd.Check {
		err = checkBuild(cfg)
	}
	if err != nil {
		return cmd.Fail(err)
	}
	if cmd.Check {
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}
	log := cfg.Log.Logger(stderr)

	sig := daemon.Notify()
	defer sig.Stop()
	gw, err := start(sig.Context(), cfg, log)
	if err != nil {
		log.Error("gateway did not start", "err", err)
		return 1
	}
	if path == "" {
		printQuickstart(stdout, cfg)
	}
	return sig.Serve(daemon.Service{
		Name:    "gateway",
		Log:     log,
		Timeout: cmd.ShutdownTimeout,
		Reload: func() ([]string, error) {
			next, err := load()
			if err == nil {
				err = checkBuild(next)
			}
			if err != nil {
				return nil, err
			}
			return gw.reload(next)
		},
		Shutdown: gw.shutdown,
		Failed:   gw.failed,
	})
}
