package config

// NAT is the `nat:` section. Stub: the nat package's engineer replaces this file.
type NAT struct {
	Stub []string `yaml:"stun"`
}

func (s *NAT) validate() error { return nil }
