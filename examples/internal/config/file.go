package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
)

// File is the whole configuration file. A nil section is absent from the
// file: that part of the gateway does not run.
type File struct {
	NAT   *NAT   `yaml:"nat"`
	DNS   *DNS   `yaml:"dns"`
	Proxy *Proxy `yaml:"proxy"`
	Relay *Relay `yaml:"relay"`

	// Metrics is the address of the Prometheus and /healthz HTTP endpoint;
	// empty means none.
	Metrics string `yaml:"metrics"`

	// Log chooses the log format and level.
	Log Log `yaml:"log"`

	// Demo, if set, makes the gateway run its own demo backends, so that a
	// configuration can show a real answer with no servers of its own.
	Demo *Demo `yaml:"demo"`
}

// Demo is the `demo:` section: built-in backends for the quickstart.
type Demo struct {
	// Names are the host names the demo TLS backend's self-signed
	// certificate covers, e.g. ["blog.example.com"].
	Names []string `yaml:"names"`
	// TLS is the address of the demo TLS backend, e.g. "127.0.0.1:8444".
	TLS string `yaml:"tls"`
	// HTTP is the address of the demo plain-HTTP backend, e.g. "127.0.0.1:8081".
	HTTP string `yaml:"http"`
}

func (d *Demo) validate() error {
	var errs []error
	for i, n := range d.Names {
		if n == "" || strings.ContainsAny(n, " /:") {
			errs = append(errs, Errorf(fmt.Sprintf("demo.names[%d]", i), n, "want a host name"))
		}
	}
	for _, a := range []struct{ path, v string }{{"demo.tls", d.TLS}, {"demo.http", d.HTTP}} {
		if a.v == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a.v); err != nil {
			errs = append(errs, Errorf(a.path, a.v, "want ip:port: %v", err))
		}
	}
	return errors.Join(errs...)
}

// Log is the `log:` section.
type Log struct {
	// Format is "text" (the default) or "json".
	Format string `yaml:"format"`
	// Level is "debug", "info" (the default), "warn" or "error".
	Level string `yaml:"level"`
}

func (f *File) validate() error {
	var errs []error
	if f.NAT != nil {
		errs = append(errs, f.NAT.validate())
	}
	if f.DNS != nil {
		errs = append(errs, f.DNS.validate())
	}
	if f.Proxy != nil {
		errs = append(errs, f.Proxy.validate())
	}
	if f.Relay != nil {
		errs = append(errs, f.Relay.validate())
	}
	if f.Demo != nil {
		errs = append(errs, f.Demo.validate())
	}
	if f.Metrics != "" {
		if _, err := netip.ParseAddrPort(f.Metrics); err != nil {
			errs = append(errs, Errorf("metrics", f.Metrics, "want ip:port: %v", err))
		}
	}
	switch f.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, Errorf("log.format", f.Log.Format, `want "text" or "json"`))
	}
	switch f.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, Errorf("log.level", f.Log.Level, `want "debug", "info", "warn" or "error"`))
	}
	return errors.Join(errs...)
}

// Logger returns the logger the `log:` section describes, writing to w.
func (l Log) Logger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(l.Level)) // validated by Parse; "" keeps Info
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
