package config

import (
	"errors"
	"net/netip"
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
