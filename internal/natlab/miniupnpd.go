package natlab

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
)

// MiniUPnPdConfig configures a miniupnpd (Debian's miniupnpd-nftables: UPnP
// IGD, NAT-PMP and PCP) on site A's Router: listening on the LAN bridge,
// mapping on the WAN link, with its nftables backend.
//
// miniupnpd refuses to forward ports when its WAN address is in a reserved
// range, as the lab's 203.0.113.2 is (RFC 5737), unless a STUN test shows
// that nothing filters in front of it. So the lab router runs that test
// against STUN (an RFC 5780 server on the Server host: four answers, from
// both addresses and both ports), and StartMiniUPnPd lets Server's UDP reach
// the router itself (the lab's input chain drops unsolicited WAN traffic).
type MiniUPnPdConfig struct {
	// STUN is the RFC 5780 STUN server (on Server) for miniupnpd's
	// external-address test. Required.
	STUN netip.AddrPort

	// NoUPnP switches UPnP IGD off; NoNATPMP switches NAT-PMP and PCP off
	// (miniupnpd 2.3 has one switch for both).
	NoUPnP, NoNATPMP bool

	// IGDv1 makes the device describe itself as IGD v1 (force_igd_desc_v1).
	IGDv1 bool

	// Rules are miniupnpd permission rules, checked in order, e.g.
	// "deny 4000-4010 0.0.0.0/0 0-65535". "allow 1024-65535 <LAN>
	// 1024-65535" and "deny 0-65535 0.0.0.0/0 0-65535" always follow.
	Rules []string

	// MinLifetime and MaxLifetime bound PCP and NAT-PMP lifetimes; zero
	// means 1 s and one day.
	MinLifetime, MaxLifetime time.Duration

	// LeaseFile keeps mappings in a lease file, so that a restarted daemon
	// restores them. Without it a restart forgets every mapping.
	LeaseFile bool
}

// MiniUPnPd is a running miniupnpd on Router. It is stopped at cleanup.
type MiniUPnPd struct {
	l    *Lab
	cfg  MiniUPnPdConfig
	dir  string
	conf string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *lineLog
}

// miniupnpdTable is the nftables table (family inet) miniupnpd adds its
// rules to. miniupnpd 2.3 expects its table and chains to exist (Debian's
// nft_init.sh would create them, with a forward policy of drop that would
// cut the lab's forwarding); StartMiniUPnPd creates them with policy accept,
// at priorities just before the lab's own NAT chains so that a mapping's
// DNAT is decided before anything of the lab's and the lab's masquerade
// (oifname wan only) never sees the inbound flows.
const miniupnpdTable = "hpupnp"

// StartMiniUPnPd starts miniupnpd on Router and waits until it listens. It
// skips (or fails, when required) the test without the miniupnpd program.
func (l *Lab) StartMiniUPnPd(cfg MiniUPnPdConfig) *MiniUPnPd {
	l.t.Helper()
	interop.Need(l.t, "miniupnpd")
	if !cfg.STUN.IsValid() {
		l.t.Fatal("natlab: MiniUPnPdConfig.STUN is required")
	}
	d := &MiniUPnPd{l: l, cfg: cfg, dir: l.t.TempDir()}
	d.conf = filepath.Join(d.dir, "miniupnpd.conf")
	if err := os.WriteFile(d.conf, []byte(d.config()), 0o600); err != nil {
		l.t.Fatal(err)
	}
	if err := l.nft(Router, miniupnpdRuleset(l.addrs[Server])); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(d.Stop)
	if err := d.start(); err != nil {
		l.t.Fatal(err)
	}
	return d
}

// miniupnpdRuleset creates miniupnpd's table and lets the STUN server's
// answers (from any of servers' addresses) reach the router.
func miniupnpdRuleset(servers []netip.Addr) string {
	var srv []string
	for _, a := range servers {
		srv = append(srv, a.String())
	}
	return fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority filter - 1; policy accept;
		jump miniupnpd
	}
	chain miniupnpd {
	}
	chain prerouting {
		type nat hook prerouting priority dstnat - 1; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority srcnat - 1; policy accept;
		jump postrouting_miniupnpd
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
insert rule ip natlab input iifname %[2]q ip saddr { %[3]s } meta l4proto udp accept
`, miniupnpdTable, wanIf, strings.Join(srv, ", "))
}

func (d *MiniUPnPd) config() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	yn := func(v bool) string {
		if v {
			return "yes"
		}
		return "no"
	}
	lan := netip.MustParsePrefix("192.168.1.1/24")
	if s := siteA(d.l.cfg.Kind); s.gw.IsValid() {
		lan = s.gw
	}
	var uuid [16]byte
	_, _ = rand.Read(uuid[:])
	minL, maxL := d.cfg.MinLifetime, d.cfg.MaxLifetime
	if minL <= 0 {
		minL = time.Second
	}
	if maxL <= 0 {
		maxL = 24 * time.Hour
	}
	w("ext_ifname=%s", wanIf)
	w("listening_ip=%s", lanIf)
	w("http_port=0")
	w("enable_upnp=%s", yn(!d.cfg.NoUPnP))
	w("enable_natpmp=%s", yn(!d.cfg.NoNATPMP))
	w("force_igd_desc_v1=%s", yn(d.cfg.IGDv1))
	w("secure_mode=yes")
	w("system_uptime=yes")
	w("notify_interval=60")
	w("clean_ruleset_interval=600")
	w("ipv6_disable=yes")
	w("ext_perform_stun=yes")
	w("ext_stun_host=%s", d.cfg.STUN.Addr())
	w("ext_stun_port=%d", d.cfg.STUN.Port())
	w("min_lifetime=%d", int(minL/time.Second))
	w("max_lifetime=%d", int(maxL/time.Second))
	w("uuid=%x-%x-%x-%x-%x", uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:16])
	w("upnp_table_name=%s", miniupnpdTable)
	w("upnp_nat_table_name=%s", miniupnpdTable)
	w("upnp_forward_chain=miniupnpd")
	w("upnp_nat_chain=prerouting_miniupnpd")
	w("upnp_nat_postrouting_chain=postrouting_miniupnpd")
	if d.cfg.LeaseFile {
		w("lease_file=%s", filepath.Join(d.dir, "leases"))
	}
	for _, r := range d.cfg.Rules {
		w("%s", r)
	}
	w("allow 1024-65535 %s 1024-65535", lan.Masked())
	w("deny 0-65535 0.0.0.0/0 0-65535")
	return b.String()
}

// miniupnpdReady is how long miniupnpd may take to start listening: its STUN
// test waits up to a few seconds per round for the four answers.
const miniupnpdReady = 30 * time.Second

// start runs the daemon and waits for its "listening" lines.
func (d *MiniUPnPd) start() error {
	c := d.l.Command(Router, "miniupnpd", "-d", "-f", d.conf, "-P", filepath.Join(d.dir, "pid"))
	out := &lineLog{t: d.l.t, prefix: "Router miniupnpd: ", ready: make(chan struct{}), exited: make(chan struct{})}
	if !d.cfg.NoUPnP {
		out.want = append(out.want, "HTTP listening on port")
	}
	if !d.cfg.NoNATPMP {
		out.want = append(out.want, "Listening for NAT-PMP/PCP traffic")
	}
	c.Stdout = out
	c.Stderr = out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.WaitDelay = 2 * time.Second
	d.l.t.Cleanup(out.flush)
	if err := c.Start(); err != nil {
		return fmt.Errorf("natlab: starting miniupnpd: %w", err)
	}
	go func() {
		err := c.Wait()
		out.mu.Lock()
		out.waitErr = err
		out.mu.Unlock()
		close(out.exited)
	}()
	d.mu.Lock()
	d.cmd, d.out = c, out
	d.mu.Unlock()
	select {
	case <-out.ready:
		// The STUN test runs before the sockets open: did it allow
		// forwarding?
		if strings.Contains(out.String(), "Port forwarding is now disabled") {
			return fmt.Errorf("natlab: miniupnpd disabled port forwarding (STUN test):\n%s", out.String())
		}
		return nil
	case <-out.exited:
		return fmt.Errorf("natlab: miniupnpd exited at start:\n%s", out.String())
	case <-time.After(miniupnpdReady):
		return fmt.Errorf("natlab: miniupnpd not listening after %v:\n%s", miniupnpdReady, out.String())
	}
}

// Stop stops the daemon (SIGTERM: it removes its rules as on a clean
// shutdown) and waits for it. Stopping a stopped daemon does nothing.
func (d *MiniUPnPd) Stop() {
	d.mu.Lock()
	c, out := d.cmd, d.out
	d.cmd = nil
	d.mu.Unlock()
	if c == nil {
		return
	}
	_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
	select {
	case <-out.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-out.exited
	}
}

// Restart stops the daemon, empties its chains (as a rebooted router has
// none of the old rules), and starts it again: without LeaseFile every
// mapping is gone.
func (d *MiniUPnPd) Restart() error {
	d.Stop()
	if !d.cfg.LeaseFile {
		var flush strings.Builder
		for _, ch := range []string{"miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"} {
			fmt.Fprintf(&flush, "flush chain inet %s %s\n", miniupnpdTable, ch)
		}
		if err := d.l.nft(Router, flush.String()); err != nil {
			return err
		}
	}
	return d.start()
}

// Log returns what the daemon printed so far (its current run).
func (d *MiniUPnPd) Log() string {
	d.mu.Lock()
	out := d.out
	d.mu.Unlock()
	if out == nil {
		return ""
	}
	return out.String()
}

// Location returns the URL of the device description, where UPnP clients
// that skip discovery (`upnpc -u URL`) start, or "" before the daemon listens.
// miniupnpc 2.2 discovers the device but calls it "not connected" because
// the lab's WAN address is reserved, so upnpc needs it.
func (d *MiniUPnPd) Location() string {
	const key = "HTTP listening on port "
	log := d.Log()
	i := strings.LastIndex(log, key)
	if i < 0 {
		return ""
	}
	port, _, _ := strings.Cut(log[i+len(key):], "\n")
	gw := siteA(d.l.cfg.Kind).gw.Addr()
	return fmt.Sprintf("http://%s/rootDesc.xml", netip.AddrPortFrom(gw, uint16(atoi(strings.TrimSpace(port)))))
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// Rules returns `nft list table inet hpupnp` on Router: the rules miniupnpd
// installed for its mappings.
func (d *MiniUPnPd) Rules() (string, error) {
	out, err := d.l.Command(Router, "nft", "list", "table", "inet", miniupnpdTable).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("natlab: nft list table: %w: %s", err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// lineLog collects a daemon's output, closes ready once a line containing
// each of want has been seen, and logs everything at cleanup if the test
// failed.
type lineLog struct {
	t      interface{ Log(...any) }
	prefix string
	want   []string
	ready  chan struct{}

	exited chan struct{} // closed when the process has been waited for

	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	isReady bool
	waitErr error
}

func (w *lineLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	const max = 1 << 20
	if w.buf.Len()+len(p) > max {
		w.buf.Reset()
	}
	w.buf.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		for i, want := range w.want {
			if strings.Contains(line, want) {
				w.want = append(w.want[:i], w.want[i+1:]...)
				break
			}
		}
		if !w.isReady && len(w.want) == 0 {
			w.isReady = true
			close(w.ready)
		}
	}
	return len(p), nil
}

func (w *lineLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *lineLog) flush() {
	if tb, ok := w.t.(interface{ Failed() bool }); ok && !tb.Failed() {
		return
	}
	sc := bufio.NewScanner(strings.NewReader(w.String()))
	for sc.Scan() {
		w.t.Log(w.prefix + sc.Text())
	}
}

var _ io.Writer = (*lineLog)(nil)
