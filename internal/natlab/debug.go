package natlab

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// Debug returns the state of the lab's NAT devices for a failure message:
// each one's nft ruleset (with the dynamic sets' current elements) and, when
// the conntrack program is installed, its connection tracking table. The
// teardown logs it when the test has failed.
func (l *Lab) Debug() string {
	var b strings.Builder
	_, err := exec.LookPath("conntrack")
	haveConntrack := err == nil
	for _, h := range []Host{Router, CGN, SiteBRouter, SiteBCGN} {
		if _, ok := l.ns[h]; !ok {
			continue
		}
		fmt.Fprintf(&b, "==== %v (%s): nft list ruleset\n", h, l.ns[h])
		out, _ := l.Command(h, "nft", "list", "ruleset").CombinedOutput()
		b.Write(bytes.TrimSpace(out))
		b.WriteString("\n")
		if haveConntrack {
			fmt.Fprintf(&b, "==== %v: conntrack -L\n", h)
			out, _ := l.Command(h, "conntrack", "-L").CombinedOutput()
			b.Write(bytes.TrimSpace(out))
			b.WriteString("\n")
		}
	}
	return b.String()
}
