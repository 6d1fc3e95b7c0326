package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/hairpin-go/hairpin/relay"
)

// credentialsServer serves relay.credentials: GET /credentials answers with
// TURN REST credentials as an RTCIceServer JSON object, to the networks in
// relay.credentials.allow only. The URIs name relay.credentials.hostname
// (turns:host:tlsPort?transport=tcp), which both Chromium and Firefox accept,
// where an IP address in a turns: URI is refused or ignored.
type credentialsServer struct {
	srv     *http.Server
	addr    net.Addr
	wg      sync.WaitGroup
	denied  atomic.Uint64 // requests from outside the allow list
	granted atomic.Uint64
}

func (g *gateway) startCredentials(rc *config.Relay) (*credentialsServer, error) {
	if len(g.relay.Secrets) == 0 {
		return nil, errors.New("gateway: relay.credentials: the relay has no secret to sign with")
	}
	l, err := net.Listen("tcp", rc.Credentials.Listen)
	if err != nil {
		return nil, fmt.Errorf("gateway: relay.credentials: %w", err)
	}
	c := &credentialsServer{addr: l.Addr()}
	log := g.log.With("part", "credentials")
	mux := http.NewServeMux()
	mux.HandleFunc("/credentials", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		cur, public := g.cfg.Relay, g.public
		g.mu.Unlock()
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !allowed(cur.Credentials.CredentialsAllow(), ap.Addr()) {
			c.denied.Add(1)
			log.Debug("credentials refused: source not in relay.credentials.allow", "src", r.RemoteAddr)
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		c.granted.Add(1)
		h := &relay.CredentialsHandler{
			// The relay's secret in force, which a reload may replace.
			Server: g.relay,
			URIs:   cur.URIs(public),
			TTL:    cur.Credentials.CredentialsTTL(),
		}
		h.ServeHTTP(w, r)
	})
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.failPart("relay.credentials", err)
		}
	}()
	g.log.Info("credentials endpoint listening", "url", "http://"+l.Addr().String()+"/credentials")
	return c, nil
}

func allowed(allow []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c *credentialsServer) shutdown(ctx context.Context) error {
	err := c.srv.Shutdown(ctx)
	c.wg.Wait()
	return err
}
