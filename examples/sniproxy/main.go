// Command sniproxy shares one port among many backends by name, from the
// `proxy:` section of a hairpin configuration file: TLS is routed by SNI
// without being decrypted, plain HTTP by Host.
//
//	sniproxy -config hairpin.yaml [-check] [-shutdown-timeout D]
//
// example.yaml next to this file is a commented starting point. Listeners
// use SO_REUSEPORT, so a new sniproxy can start on the same ports before the
// old one is stopped.
//
// Signals: SIGHUP re-reads the file and applies every proxy: key but the
// listeners, as the gateway does: routes swap atomically (connections
// already routed are untouched); limits, timeouts and trustProxyFrom start
// a new proxy on the same listeners while the old one finishes its
// connections. The log names by key path the changes that wait for a
// restart (proxy.tls, proxy.http, log), and a bad file is rejected with the
// running configuration kept. SIGINT and SIGTERM stop accepting and wait up to
// -shutdown-timeout for open connections, then close them. If a listener
// stops serving, sniproxy exits with status 1.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/daemon"
	"github.com/hairpin-go/hairpin/examples/internal/serve"
	"github.com/hairpin-go/hairpin/proxy"
)

// description is the one line -h prints first.
const description = "sniproxy: one port shared by many backends, TLS routed by SNI and HTTP by Host, from the proxy: section of a hairpin configuration (see example.yaml)."

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := daemon.New("sniproxy", description, "sniproxy -config FILE [-check] [-shutdown-timeout D]", stdout, stderr)
	if code, ok := cmd.Parse(args); !ok {
		return code
	}
	if cmd.Config == "" {
		return cmd.Usagef("-config is required")
	}
	load := func() (*config.File, error) {
		f, err := config.Load(cmd.Config)
		if err == nil && f.Proxy == nil {
			err = fmt.Errorf("config: %s has no proxy: section", cmd.Config)
		}
		if err == nil && len(f.Proxy.TLS)+len(f.Proxy.HTTP) == 0 {
			err = config.Errorf("proxy", nil, "no tls or http listeners configured")
		}
		return f, err
	}
	f, err := load()
	if err != nil {
		return cmd.Fail(err)
	}
	log := f.Log.Logger(stderr)
	failed := make(chan error, 1)
	var failOnce sync.Once
	stopping := make(chan struct{})
	fail := func(part string, err error) {
		select {
		case <-stopping: // shutting down: listeners closing is expected
		default:
			failOnce.Do(func() { failed <- fmt.Errorf("sniproxy: %s stopped serving: %w", part, err) })
		}
	}
	p, err := serve.NewProxy(f.Proxy, log, fail)
	if err != nil {
		return cmd.Fail(err)
	}
	if cmd.Check {
		_ = p.Shutdown(context.Background())
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}

	sig := daemon.Notify()
	defer sig.Stop()
	if err := p.Listen(proxy.Listen); err != nil {
		_ = p.Shutdown(context.Background())
		return cmd.Fail(err)
	}
	for i, a := range p.Addrs() {
		log.Info("sniproxy: listening", "addr", a.String(), "protocol", p.Protocols()[i].String())
	}
	cur := f
	reload := func() ([]string, error) {
		next, err := load()
		if err != nil {
			return nil, err
		}
		apply, err := p.Prepare(next.Proxy)
		if err != nil {
			return nil, err
		}
		if err := apply(); err != nil {
			return nil, err
		}
		restart := config.Restart(config.Within(config.Changed(cur, next), []string{"proxy", "log"}), serve.ProxyLiveKeys())
		// What waits for a restart keeps its running value, so that the
		// next reload names it again until the restart.
		next.Proxy.TLS, next.Proxy.HTTP, next.Log = cur.Proxy.TLS, cur.Proxy.HTTP, cur.Log
		cur = next
		log.Info("sniproxy: routes", "routes", len(p.Routes()))
		return restart, nil
	}
	return sig.Serve(daemon.Service{
		Name:    "sniproxy",
		Log:     log,
		Timeout: cmd.ShutdownTimeout,
		Reload:  reload,
		Shutdown: func(ctx context.Context) error {
			close(stopping)
			err := p.Shutdown(ctx)
			st := p.Stats()
			log.Info("sniproxy: stopped", "accepted", st.Accepted, "routed", st.Routed, "rejected", st.Rejected)
			return err
		},
		Failed: failed,
	})
}
