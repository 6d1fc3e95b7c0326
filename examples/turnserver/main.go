// Command turnserver runs a TURN relay from the `relay:` section of a
// hairpin configuration file: UDP and TCP on every listen address, TLS on
// every tlsListen address, STUN Binding on the same ports.
//
//	turnserver -config hairpin.yaml [-public 203.0.113.1] [-credentials 127.0.0.1:8088] [-check] [-shutdown-timeout D]
//
// turnserver.yaml next to this file is a commented starting point.
//
// A public value of "{public}" is filled from -public (the gateway learns it
// by probing the NAT instead). -credentials serves TURN REST API credentials
// as RTCIceServer JSON on http://ADDR/credentials, for a web app behind its
// own authentication; ADDR must be a loopback or private address.
//
// Signals: SIGHUP re-reads the file; relay.public applies to new
// allocations at once, relay.secret, relay.secrets and relay.users to every
// request from then on (an allocation whose credential is gone can no
// longer refresh and ends with its lifetime), and the log names by key path
// every other change, which waits for a restart (the relay library fixes
// its limits and peer policy when it starts serving); a bad file is rejected
// with the running configuration kept. SIGINT and SIGTERM close the
// listening sockets at once (a new instance can bind them), end UDP
// allocations (their packets come through those sockets) and let those on
// TCP/TLS connections drain for up to -shutdown-timeout, then close them. If a listener stops serving, turnserver exits with status 1.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/examples/internal/daemon"
	"github.com/hairpin-go/hairpin/examples/internal/serve"
	"github.com/hairpin-go/hairpin/relay"
)

// description is the one line -h prints first.
const description = "turnserver: a TURN relay (RFC 8656) for WebRTC behind a NAT router, from the relay: section of a hairpin configuration (see turnserver.yaml)."

// liveKeys are the key paths a reload applies while serving.
var liveKeys = []string{"relay.public", "relay.secret", "relay.secrets", "relay.users"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, for tests: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := daemon.New("turnserver", description,
		"turnserver -config FILE [-public IP] [-credentials IP:PORT] [-check] [-shutdown-timeout D]", stdout, stderr)
	publicFlag := cmd.Flags.String("public", "", `public `+"`address`"+` used when relay.public is "{public}"`)
	creds := cmd.Flags.String("credentials", "", "`ip:port` for the RTCIceServer credentials endpoint (needs a secret)")
	if code, ok := cmd.Parse(args); !ok {
		return code
	}
	if cmd.Config == "" {
		return cmd.Usagef("-config is required")
	}
	var flagPublic netip.Addr
	if *publicFlag != "" {
		a, err := netip.ParseAddr(*publicFlag)
		if err != nil {
			return cmd.Usagef("-public: want an IP address: %v", err)
		}
		flagPublic = a
	}
	if *creds != "" {
		if err := checkCredentialsAddr(*creds); err != nil {
			return cmd.Usagef("%v", err)
		}
	}
	load := func() (*config.File, *relay.Server, error) {
		f, err := config.Load(cmd.Config)
		if err == nil && f.Relay == nil {
			err = fmt.Errorf("config: %s has no relay: section", cmd.Config)
		}
		if err != nil {
			return nil, nil, err
		}
		srv, _, err := f.Relay.Build(f.Log.Logger(io.Discard))
		if err == nil && *creds != "" && len(srv.Secrets) == 0 {
			err = errors.New("-credentials needs relay.secret")
		}
		return f, srv, err
	}
	f, _, err := load()
	if err != nil {
		return cmd.Fail(err)
	}
	if cmd.Check {
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}
	log := f.Log.Logger(stderr)
	srv, _, err := f.Relay.Build(log)
	if err != nil {
		return cmd.Fail(err)
	}
	// publicOf is the address a relay: section advertises: its fixed
	// relay.public, -public for "{public}", else none (the relay socket's own).
	publicOf := func(c *config.Relay) netip.Addr {
		if c.Public == config.PublicPlaceholder {
			return flagPublic
		}
		a, _ := netip.ParseAddr(c.Public)
		return a
	}
	srv.SetPublic(publicOf(f.Relay))

	sig := daemon.Notify()
	defer sig.Stop()
	socks, err := serve.ListenRelay(f.Relay)
	if err != nil {
		return cmd.Fail(err)
	}
	var hs *http.Server
	if *creds != "" {
		ln, err := net.Listen("tcp", *creds)
		if err != nil {
			socks.Close()
			return cmd.Fail(err)
		}
		start := f.Relay
		mux := http.NewServeMux()
		mux.HandleFunc("/credentials", func(w http.ResponseWriter, r *http.Request) {
			// The URIs name the public address advertised now.
			h := &relay.CredentialsHandler{Server: srv, URIs: turnURIs(start, srv)}
			h.ServeHTTP(w, r)
		})
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ln) }()
	}

	stop := make(chan struct{})
	failed := make(chan error, len(socks.Addrs())*2)
	var wg sync.WaitGroup
	socks.Serve(srv, func(part string, fn func() error) {
		wg.Go(func() {
			err := fn()
			select {
			case <-stop:
			default:
				if !errors.Is(err, relay.ErrServerClosed) {
					failed <- fmt.Errorf("turnserver: %s stopped serving: %w", part, err)
				}
			}
		})
	})
	log.Info("turnserver: serving", "listen", socks.Addrs(), "public", srv.PublicAddr(), "relayPorts", srv.RelayPorts.String())

	cur := f
	reload := func() ([]string, error) {
		next, nextSrv, err := load()
		if err != nil {
			return nil, err
		}
		if cur.Relay.Secret != next.Relay.Secret || !slices.Equal(cur.Relay.Secrets, next.Relay.Secrets) ||
			!maps.Equal(cur.Relay.Users, next.Relay.Users) {
			srv.SetCredentials(nextSrv.Users, nextSrv.Secrets)
			log.Info("turnserver: credentials replaced", "users", len(nextSrv.Users), "secrets", len(nextSrv.Secrets))
		}
		restart := config.Restart(config.Within(config.Changed(cur, next), []string{"relay", "log"}), liveKeys)
		if a := publicOf(next.Relay); a != srv.PublicAddr() {
			srv.SetPublic(a)
			log.Info("turnserver: public address for new allocations", "public", a.String())
		}
		// What waits for a restart keeps its running value, so that the
		// next reload names it again until the restart.
		kept := *cur.Relay
		kept.Public = next.Relay.Public
		kept.Secret, kept.Secrets, kept.Users = next.Relay.Secret, next.Relay.Secrets, next.Relay.Users
		next.Relay, next.Log = &kept, cur.Log
		cur = next
		return restart, nil
	}
	return sig.Serve(daemon.Service{
		Name:    "turnserver",
		Log:     log,
		Timeout: cmd.ShutdownTimeout,
		Reload:  reload,
		Shutdown: func(ctx context.Context) error {
			close(stop)
			err := srv.Shutdown(ctx)
			wg.Wait()
			if hs != nil {
				_ = hs.Close()
			}
			st := srv.Stats()
			log.Info("turnserver: stopped", "allocations", st.Allocations)
			return err
		},
		Failed: failed,
	})
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
