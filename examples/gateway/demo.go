package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
)

// demo runs the built-in backends of the quickstart: a TLS server with a
// self-signed certificate for the demo names, and a plain HTTP server. Both
// answer every request with a line that says which backend answered, so a
// person can see that the proxy routed by name.
type demo struct {
	cert    tls.Certificate
	servers []*http.Server
	wg      sync.WaitGroup
}

// startDemo listens on the configured addresses and serves until shutdown.
func startDemo(cfg *config.Demo, log *slog.Logger) (*demo, error) {
	cert, err := selfSigned(cfg.Names)
	if err != nil {
		return nil, err
	}
	d := &demo{cert: cert}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		fmt.Fprintf(w, "hello from the hairpin demo backend: %s://%s%s (you are %s)\n", scheme, r.Host, r.URL.Path, r.RemoteAddr)
	})
	start := func(addr string, tlsConfig *tls.Config) error {
		if addr == "" {
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("gateway: demo backend: %w", err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsConfig,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		d.servers = append(d.servers, srv)
		if tlsConfig != nil {
			l = tls.NewListener(l, tlsConfig)
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("demo backend stopped", "addr", addr, "err", err)
			}
		}()
		log.Info("demo backend listening", "addr", l.Addr().String(), "tls", tlsConfig != nil)
		return nil
	}
	if err := start(cfg.TLS, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}); err != nil {
		return nil, err
	}
	if err := start(cfg.HTTP, nil); err != nil {
		d.shutdown(context.Background())
		return nil, err
	}
	return d, nil
}

func (d *demo) shutdown(ctx context.Context) {
	for _, s := range d.servers {
		_ = s.Shutdown(ctx)
	}
	d.wg.Wait()
}

// selfSigned makes a short-lived ECDSA certificate covering names.
func selfSigned(names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, err
	}
	cn := "hairpin demo"
	if len(names) > 0 {
		cn = names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"hairpin demo backend"}},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
