package proxy

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestEdgeEndToEnd: an internet client reaches two home backends by name
// through edge → agent with end-to-end TLS (it verifies the backends'
// certificates), and each backend sees the client's real address in the
// PROXY v2 header: one through a home Proxy serving the agent's listener,
// one through a Pool as the agent's Target.
func TestEdgeEndToEnd(t *testing.T) {
	for _, tr := range []TunnelTransport{TransportQUIC, TransportTCP} {
		t.Run(tr.String(), func(t *testing.T) {
			blog := newEdgePPBackend(t, "blog.example.com")
			shop := newEdgePPBackend(t, "shop.example.com")
			edgeKey, homeKey, shopKey := testKey(t), testKey(t), testKey(t)
			e := &Edge{Key: edgeKey, Agents: []EdgeAgent{
				{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"blog.example.com"}},
				{Name: "shop", PublicKey: pubOf(shopKey), Names: []string{"*.example.com"}},
			}}
			ea := startEdge(t, e)
			_, pubAddr := publicProxy(t, e)

			home := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"blog.example.com"}, Transport: tr}
			homeProxy(t, home, Route{Protocol: ProtocolTLS, Host: "blog.example.com",
				Target: &Pool{Backends: []string{blog.addr}, ProxyProtocol: ProxyProtocolV2, HealthCheck: HealthCheck{Interval: -1}}})
			startAgent(t, home)
			shopAgent := &Agent{Key: shopKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"shop.example.com"}, Transport: tr,
				Target: &Pool{Backends: []string{shop.addr}, ProxyProtocol: ProxyProtocolV2, HealthCheck: HealthCheck{Interval: -1}}}
			startAgent(t, shopAgent)

			for _, b := range []*edgePPBackend{blog, shop} {
				said, local, err := dialTLSFrom(t.Context(), pubAddr, b.name, b.roots)
				if err != nil {
					t.Fatalf("%s: %v", b.name, err)
				}
				if want := b.name + " " + local; said != want {
					t.Errorf("%s said %q, want %q (the client's own address)", b.name, said, want)
				}
			}
			if st := e.Connected(); len(st) != 2 || st[0].Transport != tr {
				t.Errorf("edge sees %+v, want two agents over %v", st, tr)
			}
			if s := e.Stats(); s.StreamsTotal != 2 || s.Agents != 2 {
				t.Errorf("edge stats %+v, want 2 streams, 2 agents", s)
			}
		})
	}
}

// TestEdgeHTTP: plain HTTP by Host through the tunnel; a name nobody holds
// gets a fast 503.
func TestEdgeHTTP(t *testing.T) {
	be := newEdgeHTTPBackend(t, "blog")
	edgeKey, homeKey := testKey(t), testKey(t)
	e := &Edge{Key: edgeKey, Agents: []EdgeAgent{
		{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"blog.example.com", "wiki.example.com"}},
	}}
	ea := startEdge(t, e)
	_, pubAddr := publicProxy(t, e)
	a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"blog.example.com"},
		Target: &Pool{Backends: []string{be}, HealthCheck: HealthCheck{Interval: -1}}}
	startAgent(t, a)

	get := func(host string) (int, string) {
		t.Helper()
		c, err := net.Dial("tcp", pubAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("blog.example.com"); code != 200 || body != "blog blog.example.com" {
		t.Errorf("blog: %d %q", code, body)
	}
	// wiki is authorised but not claimed: nobody holds it.
	if code, _ := get("wiki.example.com"); code != http.StatusServiceUnavailable {
		t.Errorf("wiki: %d, want 503", code)
	}
	if s := e.Stats(); s.NoAgent != 1 {
		t.Errorf("NoAgent = %d, want 1", s.NoAgent)
	}
}

// TestEdgeNoAgentFastFailure: a client for a name nobody holds is failed
// at once, well before any timeout of the edge (OpenTimeout is a minute):
// TLS is closed, plain HTTP gets a 503; the public proxy counts it as
// backend down. The bound (2 s) is far above the milliseconds it takes
// and far below the edge's and proxy's own timeouts.
func TestEdgeNoAgentFastFailure(t *testing.T) {
	const bound = 2 * time.Second
	e := &Edge{Key: testKey(t), OpenTimeout: time.Minute, Agents: []EdgeAgent{
		{Name: "home", PublicKey: pubOf(testKey(t)), Names: []string{"blog.example.com"}},
	}}
	startEdge(t, e)
	p, pubAddr := publicProxy(t, e)
	rej := newRejects(p)
	t.Run("tls", func(t *testing.T) {
		c, err := net.Dial("tcp", pubAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetDeadline(start.Add(20 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: "blog.example.com", InsecureSkipVerify: true})
		err = tc.Handshake()
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("handshake = %v, want a close (not a hang)", err)
		}
		if d := time.Since(start); d > bound {
			t.Errorf("closed after %v, want within %v", d, bound)
		}
		rej.want(t, ReasonBackendDown, 10*time.Second)
	})
	t.Run("http", func(t *testing.T) {
		c, err := net.Dial("tcp", pubAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetDeadline(start.Add(20 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: blog.example.com\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", resp.StatusCode)
		}
		if d := time.Since(start); d > bound {
			t.Errorf("answered after %v, want within %v", d, bound)
		}
		rej.want(t, ReasonBackendDown, 10*time.Second)
	})
	if n := e.Stats().NoAgent; n != 2 {
		t.Errorf("NoAgent = %d, want 2", n)
	}
}

// logRecords collects log records, for tests that check what was logged
// by message and attributes rather than by text.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}

// find returns the attributes of the records with message msg at level.
func (l *logRecords) find(level slog.Level, msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if r.Level != level || r.Message != msg {
			continue
		}
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// TestEdgeUnauthorisedClaim: a claim outside the agent's list is refused
// and logged, the allowed one granted; a client for the refused name,
// routed to the edge by a catch-all route, fails fast.
func TestEdgeUnauthorisedClaim(t *testing.T) {
	blog := newTLSBackend(t, "blog.example.com")
	edgeKey, homeKey := testKey(t), testKey(t)
	var logs logRecords
	e := &Edge{Key: edgeKey, Logger: slog.New(&logs), Agents: []EdgeAgent{
		{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"blog.example.com"}},
	}}
	ea := startEdge(t, e)
	_, pubAddr := publicProxy(t, e, Route{Protocol: ProtocolTLS, Target: e})
	a := &Agent{Key: homeKey, Edges: []AgentEdge{ea.agentEdge(e)},
		Names:  []string{"blog.example.com", "bank.example.org", "*.example.com"},
		Target: &Pool{Backends: []string{blog.addr}, HealthCheck: HealthCheck{Interval: -1}}}
	startAgent(t, a)
	st := a.Status()[0]
	if !slices.Equal(st.Granted, []string{"blog.example.com"}) || !slices.Equal(st.Refused, []string{"bank.example.org", "*.example.com"}) {
		t.Errorf("granted %v refused %v", st.Granted, st.Refused)
	}
	if n := e.Stats().ClaimsRefused; n != 2 {
		t.Errorf("ClaimsRefused = %d, want 2", n)
	}
	refusals := logs.find(slog.LevelWarn, "proxy: edge: claim refused")
	want := []map[string]string{
		{"agent": "home", "name": "bank.example.org", "reason": "not authorised"},
		{"agent": "home", "name": "*.example.com", "reason": "not authorised"},
	}
	if !slices.EqualFunc(refusals, want, maps.Equal) {
		t.Errorf("logged refusals %v, want %v", refusals, want)
	}
	if _, err := dialTLSAny(t, pubAddr, "bank.example.org"); err == nil {
		t.Error("bank.example.org reached a backend")
	}
	if got, err := dialTLS(t.Context(), pubAddr, "blog.example.com", blog.roots); err != nil || !strings.HasPrefix(got, "blog.example.com") {
		t.Errorf("blog: %q, %v", got, err)
	}
}

// TestEdgeUnknownAgent: an agent whose key the edge does not list, and an
// agent pinning another edge key, never get a tunnel.
func TestEdgeUnknownAgent(t *testing.T) {
	for _, tr := range []TunnelTransport{TransportQUIC, TransportTCP} {
		t.Run(tr.String(), func(t *testing.T) {
			homeKey := testKey(t)
			e := &Edge{Key: testKey(t), Agents: []EdgeAgent{{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"a.example.com"}}}}
			ea := startEdge(t, e)
			stranger := &Agent{Key: testKey(t), Edges: []AgentEdge{ea.agentEdge(e)}, Names: []string{"a.example.com"}, Transport: tr}
			wrongPin := ea.agentEdge(e)
			wrongPin.PublicKey = pubOf(testKey(t))
			misled := &Agent{Key: homeKey, Edges: []AgentEdge{wrongPin}, Names: []string{"a.example.com"}, Transport: tr}
			for _, a := range []*Agent{stranger, misled} {
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- a.Run(ctx) }()
				waitAgent(t, a, 20*time.Second, func(st []AgentEdgeStatus) bool { return st[0].Err != "" })
				cancel()
				<-done
				if st := a.Status()[0]; st.Connected {
					t.Errorf("agent connected: %+v", st)
				}
			}
			if n := e.Stats().Agents; n != 0 {
				t.Errorf("edge has %d agents", n)
			}
		})
	}
}

// TestEdgeSetAgents: a reload of the edge's agent list applies at once. An
// unchanged agent keeps its connection; one whose names shrank is
// disconnected and reconnects holding only what the new list grants; a
// removed one is refused; a new one is accepted; a bad list changes nothing.
func TestEdgeSetAgents(t *testing.T) {
	blog, shop := newTLSBackend(t, "blog.example.com"), newTLSBackend(t, "shop.example.com")
	edgeKey, homeKey, shopKey, newKey := testKey(t), testKey(t), testKey(t), testKey(t)
	home := EdgeAgent{Name: "home", PublicKey: pubOf(homeKey), Names: []string{"blog.example.com", "www.example.com"}}
	shopAgent := EdgeAgent{Name: "shop", PublicKey: pubOf(shopKey), Names: []string{"shop.example.com"}}
	e := &Edge{Key: edgeKey, Agents: []EdgeAgent{home, shopAgent}}
	ea := startEdge(t, e)
	_, pubAddr := publicProxy(t, e, Route{Protocol: ProtocolTLS, Target: e})
	agent := func(k ed25519.PrivateKey, b *tlsBackend, names ...string) *Agent {
		return &Agent{Key: k, Edges: []AgentEdge{ea.agentEdge(e)}, Names: names,
			Target: &Pool{Backends: []string{b.addr}, HealthCheck: HealthCheck{Interval: -1}}}
	}
	ha := agent(homeKey, blog, "blog.example.com", "www.example.com")
	sa := agent(shopKey, shop, "shop.example.com")
	startAgent(t, ha)
	startAgent(t, sa)
	shopSince := sa.Status()[0].Since

	if err := e.SetAgents([]EdgeAgent{home, home}); err == nil {
		t.Fatal("SetAgents accepted a key listed twice")
	}
	if got, err := dialTLS(t.Context(), pubAddr, "shop.example.com", shop.roots); err != nil || !strings.HasPrefix(got, "shop.example.com") {
		t.Fatalf("after a refused SetAgents, shop: %q, %v", got, err)
	}

	// home loses www; shop is unchanged; a new agent appears.
	home2 := home
	home2.Names = []string{"blog.example.com"}
	newAgent := EdgeAgent{Name: "new", PublicKey: pubOf(newKey), Names: []string{"new.example.com"}}
	if err := e.SetAgents([]EdgeAgent{home2, shopAgent, newAgent}); err != nil {
		t.Fatal(err)
	}
	st := waitAgent(t, ha, 20*time.Second, func(st []AgentEdgeStatus) bool {
		return st[0].Connected && slices.Equal(st[0].Refused, []string{"www.example.com"})
	})
	if !slices.Equal(st[0].Granted, []string{"blog.example.com"}) {
		t.Errorf("home after the reload: granted %v", st[0].Granted)
	}
	if s := sa.Status()[0]; !s.Connected || !s.Since.Equal(shopSince) {
		t.Errorf("shop's connection did not survive an unchanged entry: %+v (was since %v)", s, shopSince)
	}
	if got, err := dialTLS(t.Context(), pubAddr, "blog.example.com", blog.roots); err != nil || !strings.HasPrefix(got, "blog.example.com") {
		t.Errorf("blog after the reload: %q, %v", got, err)
	}
	nb := newTLSBackend(t, "new.example.com")
	startAgent(t, agent(newKey, nb, "new.example.com"))

	// shop removed: disconnected, and its reconnects are refused.
	if err := e.SetAgents([]EdgeAgent{home2, newAgent}); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, sa, 20*time.Second, func(st []AgentEdgeStatus) bool { return !st[0].Connected })
	if _, err := dialTLSAny(t, pubAddr, "shop.example.com"); err == nil {
		t.Error("shop.example.com still reached a backend after its agent was removed")
	}
	for _, c := range e.Connected() {
		if c.Name == "shop" {
			t.Errorf("shop still connected: %+v", c)
		}
	}
}
