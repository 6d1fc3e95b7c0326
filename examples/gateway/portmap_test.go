package main

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/interop"
	"github.com/hairpin-go/hairpin/internal/natlab"
)

// TestLabGatewayPortMapping: behind a router running miniupnpd with no
// port forwarded by hand, the gateway with nat.portMapping: auto maps its
// public listeners (the proxy's 443, the relay's UDP 3478, the relay's
// two-port range); a host on the internet reaches a backend through
// the mapped 443; upnpc lists the mappings; SIGTERM deletes them.
func TestLabGatewayPortMapping(t *testing.T) {
	interop.Need(t, "miniupnpd", "upnpc")
	lab := natlab.New(t, natlab.Config{Kind: natlab.PortRestricted})
	s1 := labSTUN(t, lab)
	// miniupnpd's shipped rules map only ports from 1024 up; this router
	// allows 443 too, as many do.
	d := lab.StartMiniUPnPd(natlab.MiniUPnPdConfig{STUN: netip.AddrPortFrom(s1, 3478),
		Rules: []string{"allow 1-65535 192.168.1.0/24 1-65535"}})

	gwIP, backendIP, public := lab.Addr(natlab.LAN1), lab.Addr(natlab.LAN2), lab.PublicAddr()
	backend(t, lab, natlab.LAN2, netip.AddrPortFrom(backendIP, 443).String(), "blog.example.com")
	cfg := fmt.Sprintf(`nat:
  stun: ["%[1]s:3478"]
  portMapping: auto
proxy:
  tls: ["%[2]s:443"]
  routes:
    - host: blog.example.com
      backends: ["%[3]s:443"]
      allow: ["0.0.0.0/0"]
relay:
  listen: ["%[2]s:3478"]
  realm: example.com
  secret: lab-secret
  public: "{public}"
  relayAddress: "%[2]s"
  relayPorts: "50000-50001"
`, s1, gwIP, backendIP)
	p := proctest.Start(t, lab.CommandContext(t.Context(), natlab.LAN1, gatewayBin.Path(t), "-config", writeConfig(t, []byte(cfg))))
	p.WaitFor(t, 0, "gateway ready", 30*time.Second)
	p.WaitFor(t, 0, "nat.portMapping: ports mapped", 30*time.Second)
	if !strings.Contains(p.Output(), "mapped=4 asked=4") {
		t.Fatalf("not every port mapped:\n%s", p.Output())
	}

	listed := func() string {
		out, err := lab.Command(natlab.LAN2, "upnpc", "-u", d.Location(), "-L").CombinedOutput()
		if err != nil {
			t.Fatalf("upnpc -L: %v\n%s", err, out)
		}
		return string(out)
	}
	mapping := func(proto string, port int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`(?m)^\s*\d+\s+%s\s+%d->%s:%d\s`, proto, port, regexp.QuoteMeta(gwIP.String()), port))
	}
	want := []*regexp.Regexp{mapping("TCP", 443), mapping("UDP", 3478), mapping("UDP", 50000), mapping("UDP", 50001)}
	l := listed()
	for _, re := range want {
		if !re.MatchString(l) {
			t.Errorf("upnpc does not list %v:\n%s", re, l)
		}
	}
	name, err := certName(t.Context(), lab, natlab.Peer, netip.AddrPortFrom(public, 443).String(), "blog.example.com")
	if err != nil || name != "blog.example.com" {
		t.Fatalf("from the internet through the mapped 443: %q, %v\n%s", name, err, p.Output())
	}

	p.Signal(t, syscall.SIGTERM)
	if code := p.WaitExit(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.Output())
	}
	l = listed()
	for _, re := range want {
		if re.MatchString(l) {
			t.Errorf("still mapped after shutdown: %v:\n%s", re, l)
		}
	}
}
