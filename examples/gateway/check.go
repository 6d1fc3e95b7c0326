package main

import (
	"io"

	"github.com/hairpin-go/hairpin/examples/internal/config"
)

// checkBuild builds every part of cfg without listening, as start would:
// zone files are read, certificates and keys loaded, routes compiled. -check
// and a reload run it, so what passes them starts. (Parse has already
// refused two listeners on one address.)
func checkBuild(cfg *config.File) error {
	log := config.Log{}.Logger(io.Discard)
	var errs []error
	if cfg.DNS != nil {
		srv, _, err := cfg.DNS.Build(log)
		errs = append(errs, err)
		if srv != nil {
			_ = srv.Close()
		}
	}
	if cfg.Proxy != nil {
		p, err := cfg.Proxy.Build(log)
		errs = append(errs, err)
		if p != nil {
			_ = p.Close()
		}
	}
	if cfg.Relay != nil {
		srv, _, err := cfg.Relay.Build(log)
		errs = append(errs, err)
		if srv != nil {
			_ = srv.Close()
		}
	}
	return config.Join(errs...)
}
