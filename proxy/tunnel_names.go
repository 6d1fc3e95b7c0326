package proxy

import (
	"errors"
	"fmt"
	"strings"
)

// Names an agent claims and names it is authorised for are route hosts: an
// exact name or "*.suffix". The default route ("" or "*") is not a name one
// can claim: an agent holding it would receive every unrouted connection.

// normalizeClaim returns the matching key of a claim or authorisation
// pattern: "name" or ".suffix".
func normalizeClaim(s string) (string, error) {
	p, err := normalizePattern(s)
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", errors.New("the default route cannot be claimed")
	}
	return p, nil
}

// claimCovers reports whether authorisation pattern auth allows claim
// (both normalized): an exact name only itself, a wildcard any name or
// wildcard below it.
func claimCovers(auth, claim string) bool {
	if auth == claim {
		return true
	}
	if auth[0] != '.' {
		return false
	}
	return strings.HasSuffix(claim, auth) && len(claim) > len(auth)
}

// patternMatches reports whether a normalized pattern matches a name, as
// route matching does.
func patternMatches(pattern, name string) bool {
	if pattern == "" || name == "" {
		return false
	}
	if pattern[0] != '.' {
		return pattern == name
	}
	return strings.HasSuffix(name, pattern) && len(name) > len(pattern)
}

// claimPatterns lists the patterns that can match name, most specific
// first: the name itself, then each wildcard suffix from longest to shortest.
func claimPatterns(name string) []string {
	if name == "" {
		return nil
	}
	ps := []string{name}
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			ps = append(ps, name[i:])
		}
	}
	return ps
}

// CheckTunnelName reports whether name can be claimed by an [Agent] or
// authorised on an [Edge]: an exact host name or "*.suffix", not the
// default route. The error says what is wrong.
func CheckTunnelName(name string) error {
	if name == "*" {
		return errors.New("proxy: the default route cannot be claimed")
	}
	_, err := normalizeClaim(name)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}
