package config

import (
	"fmt"
	"net/netip"
	"time"
)

// prefixes parses a list of networks, the one parser for every network list
// in the file. A bare address is its own /32 or /128; an IPv4-mapped IPv6
// network is the IPv4 network it maps; host bits are cleared
// ("192.168.1.7/24" is 192.168.1.0/24).
func prefixes(path string, in []string, add func(error)) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range in {
		p, ok := parsePrefix(s)
		if !ok {
			add(Errorf(fmt.Sprintf("%s[%d]", path, i), s, "want a network such as 192.168.1.0/24 or an address"))
			continue
		}
		out = append(out, p)
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}

// durationOff is what duration returns for "off" where a key allows it; the
// libraries read a negative duration as "switched off".
const durationOff = -1

// duration parses a duration, the one parser for every duration in the file,
// with one meaning of each value:
//
//   - empty (the key left out) returns 0: the library's default;
//   - "off", where offOK, returns durationOff: the feature is switched off;
//   - otherwise a positive duration such as "5s" or "1h30m".
//
// Zero and negative durations are errors: "0s" would otherwise mean "the
// default" for one key and "never" for another.
func duration(path, v string, offOK bool, add func(error)) time.Duration {
	if v == "" {
		return 0
	}
	if v == "off" {
		if offOK {
			return durationOff
		}
		add(Errorf(path, v, "cannot be switched off; want a positive duration such as 5s, or leave the key out for the default"))
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		hint := "want a positive duration such as 5s or 1h, or leave the key out for the default"
		if offOK {
			hint = `want a positive duration such as 5s or 1h, "off", or leave the key out for the default`
		}
		add(Errorf(path, v, "%s", hint))
		return 0
	}
	return d
}

// parsed returns the duration v, already validated, or 0 (for accessors).
func parsed(v string) time.Duration {
	return duration("", v, true, func(error) {})
}
