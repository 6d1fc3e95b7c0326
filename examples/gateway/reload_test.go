package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
	"github.com/miekg/dns"
)

// fakeUpstream answers every A question with 192.0.2.99.
func fakeUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.99")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	})}
	ready := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(ready) }
	go func() { _ = srv.ActivateAndServe() }()
	<-ready
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestReloadAppliesDNSSettingsLive: settings other than views (here the
// upstreams and the rate limit) apply on SIGHUP's path without a restart,
// on the same sockets, and the counters carry over.
func TestReloadAppliesDNSSettingsLive(t *testing.T) {
	base := string(loopbackConfig(t))
	cfg, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	gw, err := start(t.Context(), cfg, config.Log{}.Logger(&syncWriter{w: &logs}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.shutdown(ctx)
	})
	dnsAddr := gw.dnsAddrs[0].String()
	if _, rcode := query(t, dnsAddr, "127.0.0.1", "www.example.org"); rcode != dns.RcodeServerFailure {
		t.Fatalf("recursion with no upstream: rcode %s, want SERVFAIL", dns.RcodeToString[rcode])
	}
	before := gw.dns.Stats()

	up := fakeUpstream(t)
	next := strings.Replace(base, "upstreams: []", `upstreams: ["`+up+`"]`, 1)
	next = strings.Replace(next, "  # rateLimit:", "  rateLimit: {perSecond: 1, burst: 1, slip: -1}\n  #", 1)
	ncfg, err := config.Parse([]byte(next))
	if err != nil {
		t.Fatal(err)
	}
	restart, err := gw.reload(ncfg)
	if err != nil || len(restart) != 0 {
		t.Fatalf("reload: %v, restart %v", err, restart)
	}
	// dns.upstreams: the new upstream answers.
	if got, _ := query(t, dnsAddr, "127.0.0.1", "www.example.org"); len(got) != 1 || got[0] != "192.0.2.99" {
		t.Fatalf("after adding an upstream: %v, want [192.0.2.99]", got)
	}
	// dns.rateLimit: one answer a second now for the outside view.
	c := &dns.Client{Timeout: 300 * time.Millisecond, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 300 * time.Millisecond}}
	answered := 0
	for range 10 {
		m := new(dns.Msg)
		m.SetQuestion("blog.example.com.", dns.TypeA)
		if _, _, err := c.Exchange(m, dnsAddr); err == nil {
			answered++
		}
	}
	if answered > 3 {
		t.Errorf("%d of 10 answered after rateLimit perSecond 1 burst 1", answered)
	}
	after := gw.dns.Stats()
	if after.RateLimited == 0 {
		t.Error("no query counted as rate limited")
	}
	if after.Queries["inside"]["SERVFAIL"] < before.Queries["inside"]["SERVFAIL"] {
		t.Error("counters went backwards across the reload")
	}
}

// TestReloadNamesRestartKeys: a change that waits for a restart is named by
// its key path, and the old value stays in force.
func TestReloadNamesRestartKeys(t *testing.T) {
	base := string(loopbackConfig(t))
	cfg, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := start(t.Context(), cfg, config.Log{}.Logger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.shutdown(ctx)
	})
	next := strings.Replace(base, `secret: "change-me"`, `secret: "other"`, 1)
	ncfg, err := config.Parse([]byte(next))
	if err != nil {
		t.Fatal(err)
	}
	restart, err := gw.reload(ncfg)
	if err != nil || strings.Join(restart, ",") != "relay.secret" {
		t.Fatalf("reload: %v, restart %v, want [relay.secret]", err, restart)
	}
}

func TestHelpExitsZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	out := stdout.String()
	if !strings.HasPrefix(out, description+"\n") || !strings.Contains(out, "-config") || !strings.Contains(out, "-shutdown-timeout") {
		t.Fatalf("-h printed %q", out)
	}
}

// TestStartFailsOnBusyPort: a part that cannot serve fails the start with
// the reason and status 1 (it used to log "gateway ready" and run without it).
func TestStartFailsOnBusyPort(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data := string(loopbackConfig(t))
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	data = strings.Replace(data, `"`+cfg.Relay.Listen[0]+`"`, `"`+busy.LocalAddr().String()+`"`, 1)
	var stdout, stderr bytes.Buffer
	code := run([]string{"-config", writeConfig(t, []byte(data))}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "gateway: relay: listen udp "+busy.LocalAddr().String()) ||
		strings.Contains(stderr.String(), "gateway ready") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

// TestCheckLoadsFiles: -check reads the certificate and zone files a start
// would, and refuses proxy.tls and proxy.http on one address.
func TestCheckLoadsFiles(t *testing.T) {
	base := string(defaultConfig)
	for name, tt := range map[string]struct{ edit, want string }{
		"missing relay certificate": {"  relayPorts:", "relay.tls: open /nonexistent/cert.pem"},
		"missing zone file":         {"  views:\n", "dns.views[0].zoneFiles[0].path: \"/nonexistent/zone\""},
		"one address twice":         {"  http: [\"127.0.0.1:8080\"]", "proxy.http[0]: \"127.0.0.1:8443\": tcp port 8443 is already used by proxy.tls[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			var data string
			switch name {
			case "missing relay certificate":
				data = strings.Replace(base, tt.edit, "  tlsListen: [\"127.0.0.1:5349\"]\n  tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n"+tt.edit, 1)
			case "missing zone file":
				data = strings.Replace(base, "      recursion: true\n", "      recursion: true\n      zoneFiles: [{origin: example.net, path: /nonexistent/zone}]\n", 1)
			default:
				data = strings.Replace(base, tt.edit, `  http: ["127.0.0.1:8443"]`, 1)
			}
			var stdout, stderr bytes.Buffer
			if code := run([]string{"-check", "-config", writeConfig(t, []byte(data))}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q, want %q", code, stderr.String(), tt.want)
			}
		})
	}
}

// TestReloadRelayPublic: relay.public applies to new allocations on reload,
// as in turnserver: a fixed address replaces the probed one, and "{public}"
// brings the probed one back.
func TestReloadRelayPublic(t *testing.T) {
	base := string(loopbackConfig(t))
	cfg, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := start(t.Context(), cfg, config.Log{}.Logger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.shutdown(ctx)
	})
	if got := gw.relay.PublicAddr().String(); got != "203.0.113.1" {
		t.Fatalf("relay public %s at start, want nat.public 203.0.113.1", got)
	}
	for _, tt := range []struct{ public, want string }{{`"198.51.100.7"`, "198.51.100.7"}, {`"{public}"`, "203.0.113.1"}} {
		next := strings.Replace(base, `public: "{public}"`, "public: "+tt.public, 1)
		ncfg, err := config.Parse([]byte(next))
		if err != nil {
			t.Fatal(err)
		}
		restart, err := gw.reload(ncfg)
		if err != nil || len(restart) != 0 {
			t.Fatalf("reload relay.public %s: %v, restart %v", tt.public, err, restart)
		}
		if got := gw.relay.PublicAddr().String(); got != tt.want {
			t.Errorf("relay.public %s: advertised %s, want %s", tt.public, got, tt.want)
		}
	}
	// A probe result after the reload to "{public}" reaches the relay again.
	gw.setPublic(netip.MustParseAddr("203.0.113.9"))
	if got := gw.relay.PublicAddr().String(); got != "203.0.113.9" {
		t.Errorf("after a new probed address: relay advertises %s", got)
	}
}
