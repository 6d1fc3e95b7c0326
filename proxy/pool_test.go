package proxy

import (
	"testing"
	"time"
)

// waitFor polls cond; pool health has no event to wait on, but it changes
// within a few check intervals.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func healthy(pl *Pool, addr string) bool {
	for _, s := range pl.Status() {
		if s.Addr == addr {
			return s.Healthy
		}
	}
	return false
}

func TestPoolHealthFailover(t *testing.T) {
	for _, check := range []struct {
		name string
		hc   HealthCheck
	}{
		{"tcp", HealthCheck{Interval: 50 * time.Millisecond, Rise: 1, Fall: 1}},
		{"tls", HealthCheck{Interval: 50 * time.Millisecond, Rise: 1, Fall: 1, TLS: true, ServerName: "svc.test"}},
	} {
		t.Run(check.name, func(t *testing.T) {
			a := newTLSBackend(t, "svc.test")
			b := newTLSBackend(t, "svc.test")
			pool := &Pool{Backends: []string{a.addr, b.addr}, Balance: BalanceRoundRobin, HealthCheck: check.hc}
			var p Proxy
			must(t, p.AddSNIRoute("svc.test", pool))
			addr := serve(t, &p)
			connect := func(n int) {
				t.Helper()
				for range n {
					// Accept either certificate: both backends are "svc.test".
					got, err := dialTLSAny(t, addr, "svc.test")
					if err != nil || got != "svc.test " {
						t.Fatalf("through proxy: %q, %v", got, err)
					}
				}
			}
			connect(6)
			if a.count() == 0 || b.count() == 0 {
				t.Fatalf("round robin: a=%d b=%d", a.count(), b.count())
			}
			a.stop()
			waitFor(t, "a marked down", func() bool { return !healthy(pool, a.addr) })
			na, nb := a.count(), b.count()
			connect(6)
			if a.count() != na || b.count() < nb+6 { // TLS health checks count too
				t.Errorf("with a down: a=%d (was %d) b=%d (was %d)", a.count(), na, b.count(), nb)
			}
			a.restart(t)
			waitFor(t, "a back up", func() bool { return healthy(pool, a.addr) })
			na = a.count()
			connect(6)
			if a.count() == na {
				t.Error("a got no connection after coming back")
			}
		})
	}
}

// TestPoolRetry checks that a dead first backend costs no connection: the
// peeked bytes are replayed to the next one.
func TestPoolRetry(t *testing.T) {
	good := newTLSBackend(t, "svc.test")
	dead := newTLSBackend(t, "svc.test")
	dead.stop()
	pool := &Pool{Backends: []string{dead.addr, good.addr}, Balance: BalanceFirst, HealthCheck: HealthCheck{Interval: -1}}
	var p Proxy
	must(t, p.AddSNIRoute("svc.test", pool))
	addr := serve(t, &p)
	for range 3 {
		got, err := dialTLS(t.Context(), addr, "svc.test", good.roots)
		if err != nil || got != "svc.test " {
			t.Fatalf("got %q, %v", got, err)
		}
	}
	if healthy(pool, dead.addr) {
		t.Error("dead backend not marked down")
	}
}

func TestPoolAllDown(t *testing.T) {
	dead := newTLSBackend(t, "svc.test")
	dead.stop()
	p := &Proxy{}
	rej := newRejects(p)
	must(t, p.AddSNIRoute("svc.test", &Pool{Backends: []string{dead.addr}, HealthCheck: HealthCheck{Interval: -1}}))
	addr := serve(t, p)
	if _, err := dialTLS(t.Context(), addr, "svc.test", dead.roots); err == nil {
		t.Fatal("handshake through a proxy with no backend succeeded")
	}
	rej.want(t, ReasonBackendDown, 5*time.Second)
}
