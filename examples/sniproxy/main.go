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
// Signals: SIGHUP re-reads the file and swaps proxy.routes atomically, as
// the gateway does (connections already routed are untouched); the log names
// by key path the changes that wait for a restart (listeners, limits,
// timeouts, trustProxyFrom), and a bad file is rejected with the running
// routes kept. SIGINT and SIGTERM stop accepting and wait up to
// -shutdown-timeout for open connections, then close them. If a listener
// stops serving, sniproxy exits with status 1.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/daemon"
	"github.com/hairpin-go/hairpin/proxy"
)

// description is the one line -h prints first.
const description = "sniproxy: one port shared by many backends, TLS routed by SNI and HTTP by Host, from the proxy: section of a hairpin configuration (see example.yaml)."

// liveKeys are the key paths a reload applies while serving (the same as
// the gateway's for the proxy: section).
var liveKeys = []string{"proxy.routes"}

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
	p, err := f.Proxy.Build(log)
	if err != nil {
		return cmd.Fail(err)
	}
	if cmd.Check {
		_ = p.Close()
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}

	sig := daemon.Notify()
	defer sig.Stop()
	type listener struct {
		l     net.Listener
		proto proxy.Protocol
	}
	var listeners []listener
	for _, group := range []struct {
		addrs []string
		proto proxy.Protocol
	}{{f.Proxy.TLS, proxy.ProtocolTLS}, {f.Proxy.HTTP, proxy.ProtocolHTTP}} {
		for _, a := range group.addrs {
			l, err := proxy.Listen("tcp", a)
			if err != nil {
				for _, l := range listeners {
					l.l.Close()
				}
				_ = p.Close()
				return cmd.Fail(err)
			}
			listeners = append(listeners, listener{l, group.proto})
			log.Info("sniproxy: listening", "addr", l.Addr().String(), "protocol", group.proto.String())
		}
	}

	var stopping sync.Once
	stop := make(chan struct{})
	failed := make(chan error, len(listeners))
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() {
			err := p.ServeProtocol(l.l, l.proto)
			select {
			case <-stop:
			default:
				if !errors.Is(err, proxy.ErrServerClosed) {
					failed <- fmt.Errorf("sniproxy: %s stopped serving: %w", l.l.Addr(), err)
				}
			}
		})
	}
	cur := f
	reload := func() ([]string, error) {
		next, err := load()
		if err != nil {
			return nil, err
		}
		if err := next.Proxy.Apply(p, log); err != nil {
			return nil, err
		}
		restart := config.Restart(served(config.Changed(cur, next)), liveKeys)
		// What waits for a restart keeps its running value, so that the
		// next reload names it again until the restart.
		routes := next.Proxy.Routes
		kept := *cur.Proxy
		kept.Routes = routes
		next.Proxy, next.Log = &kept, cur.Log
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
			stopping.Do(func() { close(stop) })
			err := p.Shutdown(ctx)
			wg.Wait()
			st := p.Stats()
			log.Info("sniproxy: stopped", "accepted", st.Accepted, "routed", st.Routed, "rejected", st.Rejected)
			return err
		},
		Failed: failed,
	})
}

// served keeps the key paths of the sections sniproxy serves: a change in
// the file's dns: or relay: section is not sniproxy's to report.
func served(paths []string) []string {
	var out []string
	for _, p := range paths {
		if config.Covered(p, []string{"proxy", "log"}) {
			out = append(out, p)
		}
	}
	return out
}
