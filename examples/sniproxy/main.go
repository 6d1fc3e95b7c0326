// Command sniproxy shares one port among many backends by name, from the
// `proxy:` section of a hairpin configuration file: TLS is routed by SNI
// without being decrypted, plain HTTP by Host.
//
//	sniproxy -config hairpin.yaml
//
// Listeners use SO_REUSEPORT, so a new sniproxy can start on the same ports
// before the old one is stopped. SIGHUP re-reads the file and swaps the
// routes atomically (listeners and limits need a restart); SIGINT or SIGTERM
// stop accepting and wait up to -grace for open connections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := run(ctx, os.Args[1:], hup, nil); err != nil {
		fmt.Fprintln(os.Stderr, "sniproxy:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends; a value on reload re-reads the file. ready, if
// not nil, is called with the listeners' addresses once they are open.
func run(ctx context.Context, args []string, reload <-chan os.Signal, ready func([]net.Addr)) error {
	fs := flag.NewFlagSet("sniproxy", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file (YAML with a proxy: section)")
	grace := fs.Duration("grace", 30*time.Second, "how long to wait for open connections on shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		fs.Usage()
		return errors.New("-config is required")
	}
	f, err := config.Load(*path)
	if err != nil {
		return err
	}
	if f.Proxy == nil {
		return fmt.Errorf("%s has no proxy: section", *path)
	}
	log := f.Log.Logger(os.Stderr)
	p, err := f.Proxy.Build(log)
	if err != nil {
		return err
	}
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
				return err
			}
			listeners = append(listeners, listener{l, group.proto})
			log.Info("sniproxy: listening", "addr", l.Addr().String(), "protocol", group.proto)
		}
	}
	if len(listeners) == 0 {
		return errors.New("proxy: no tls or http listeners configured")
	}

	if ready != nil {
		var addrs []net.Addr
		for _, l := range listeners {
			addrs = append(addrs, l.l.Addr())
		}
		ready(addrs)
	}

	var wg sync.WaitGroup
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		wg.Go(func() {
			if err := p.ServeProtocol(l.l, l.proto); !errors.Is(err, proxy.ErrServerClosed) {
				errc <- err
			}
		})
	}
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case <-reload:
			nf, err := config.Load(*path)
			switch {
			case err != nil:
				log.Error("sniproxy: reload failed, keeping the old routes", "err", err)
			case nf.Proxy == nil:
				log.Error("sniproxy: reload failed: no proxy: section, keeping the old routes")
			default:
				if err := nf.Proxy.Apply(p, log); err != nil {
					log.Error("sniproxy: reload failed, keeping the old routes", "err", err)
				} else {
					log.Info("sniproxy: routes reloaded", "routes", len(p.Routes()))
				}
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		log.Warn("sniproxy: closed connections still open after the grace period", "err", err)
	}
	wg.Wait()
	return runErr
}
