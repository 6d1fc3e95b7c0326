// Command turnserver runs a TURN relay from the `relay:` section of a
// hairpin configuration file: UDP and TCP on every listen address, TLS on
// every tlsListen address, STUN Binding on the same ports.
//
//	turnserver -config hairpin.yaml [-public 203.0.113.1] [-credentials 127.0.0.1:8088]
//
// turnserver.yaml next to this file is a commented starting point.
//
// A public value of "{public}" is filled from -public (the gateway learns it
// by probing the NAT instead). -credentials serves TURN REST API credentials
// as RTCIceServer JSON on http://ADDR/credentials, for a web app behind its
// own authentication; ADDR must be a loopback or private address. SIGINT or
// SIGTERM drains allocations for up to 30 s.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/relay"
)

// drainTime bounds the graceful stop: long enough for a call to finish its
// current sentence, short enough for an init system's stop timeout.
const drainTime = 30 * time.Second

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "turnserver:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "configuration file (YAML with a relay: section)")
	public := flag.String("public", "", `public address used when relay.public is "{public}"`)
	creds := flag.String("credentials", "", "ip:port for the RTCIceServer credentials endpoint (needs a secret)")
	flag.Parse()
	if *path == "" {
		flag.Usage()
		return errors.New("-config is required")
	}
	f, err := config.Load(*path)
	if err != nil {
		return err
	}
	if f.Relay == nil {
		return fmt.Errorf("%s has no relay: section", *path)
	}
	log := f.Log.Logger(os.Stderr)
	srv, setPublic, err := f.Relay.Build(log)
	if err != nil {
		return err
	}
	if *public != "" {
		a, err := netip.ParseAddr(*public)
		if err != nil {
			return fmt.Errorf("-public: %w", err)
		}
		setPublic(a)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *creds != "" {
		if len(srv.Secrets) == 0 {
			return errors.New("-credentials needs relay.secret")
		}
		if err := checkCredentialsAddr(*creds); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *creds)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/credentials", &relay.CredentialsHandler{Secret: srv.Secrets[0], URIs: turnURIs(f.Relay, srv)})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		defer hs.Close()
	}
	log.Info("turnserver: serving", "listen", f.Relay.Listen, "tlsListen", f.Relay.TLSListen,
		"public", srv.PublicAddr(), "relayPorts", srv.RelayPorts.String())
	return serve(ctx, f.Relay, srv, drainTime)
}

// checkCredentialsAddr refuses a credentials endpoint reachable from the
// internet: it hands relay credentials to whoever asks, so it belongs on
// loopback or a private network, behind the web app's own authentication.
func checkCredentialsAddr(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("-credentials: want ip:port on loopback or a private network: %w", err)
	}
	if a := ap.Addr().Unmap(); !a.IsLoopback() && !a.IsPrivate() {
		return fmt.Errorf("-credentials: %v would give relay credentials to anyone who can reach it; "+
			"use a loopback or private address behind the web app's authentication", a)
	}
	return nil
}

// turnURIs names the listeners as TURN URIs, with the public address when
// one is known.
func turnURIs(c *config.Relay, srv *relay.Server) []string {
	var uris []string
	host := func(a string) string {
		ap := netip.MustParseAddrPort(a)
		h := ap.Addr()
		if p := srv.PublicAddr(); p.IsValid() {
			h = p
		}
		return netip.AddrPortFrom(h, ap.Port()).String()
	}
	for _, a := range c.Listen {
		uris = append(uris, "turn:"+host(a)+"?transport=udp", "turn:"+host(a)+"?transport=tcp")
	}
	for _, a := range c.TLSListen {
		uris = append(uris, "turns:"+host(a)+"?transport=tcp")
	}
	return uris
}

// serve runs srv on every relay.listen (UDP and TCP) and relay.tlsListen
// address until ctx is done, then shuts it down, draining allocations for up
// to drain. It returns the first listener error other than
// relay.ErrServerClosed. (It was config.Relay.Serve: the config package
// builds, the binaries serve.)
func serve(ctx context.Context, c *config.Relay, srv *relay.Server, drain time.Duration) error {
	type job struct {
		addr string
		tls  bool
	}
	var jobs []job
	for _, a := range c.Listen {
		jobs = append(jobs, job{addr: a})
	}
	for _, a := range c.TLSListen {
		jobs = append(jobs, job{addr: a, tls: true})
	}
	errc := make(chan error, len(jobs))
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if j.tls {
				errc <- srv.ListenAndServeTLS(j.addr, "", "") // config.Relay.Build loaded TLSConfig
			} else {
				errc <- srv.ListenAndServe(j.addr)
			}
		}()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	close(errc)
	for err := range errc {
		if first == nil || errors.Is(first, relay.ErrServerClosed) {
			first = err
		}
	}
	if errors.Is(first, relay.ErrServerClosed) {
		return nil
	}
	return first
}
