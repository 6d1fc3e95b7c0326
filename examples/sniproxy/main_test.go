package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hairpin-go/hairpin/examples/internal/config"
)

func backend(t *testing.T, name string) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func get(t *testing.T, addr, host string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}}
	resp, err := c.Get("http://" + host + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// TestRunAndReload runs the example on a config file, then rewrites the
// file and reloads it as SIGHUP would.
func TestRunAndReload(t *testing.T) {
	one, two := backend(t, "one"), backend(t, "two")
	path := filepath.Join(t.TempDir(), "hairpin.yaml")
	write := func(host, be string) {
		cfg := fmt.Sprintf("proxy:\n  http: [\"127.0.0.1:0\"]\n  routes:\n    - host: %s\n      http: [%q]\n      allow: [\"127.0.0.0/8\"]\n", host, be)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("one.test", one)
	ctx, cancel := context.WithCancel(t.Context())
	reload := make(chan os.Signal, 1)
	ready := make(chan []net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-config", path}, reload, func(a []net.Addr) { ready <- a }) }()
	var addr string
	select {
	case a := <-ready:
		addr = a[0].String()
	case err := <-done:
		t.Fatal(err)
	}
	if got := get(t, addr, "one.test"); got != "200 one" {
		t.Errorf("one.test: %s", got)
	}
	write("two.test", two)
	reload <- syscall.SIGHUP
	// The reload is applied by the run loop; poll until it shows.
	for i := 0; get(t, addr, "two.test") != "200 two"; i++ {
		if i > 200 {
			t.Fatal("reload not applied")
		}
	}
	if got := get(t, addr, "one.test"); got != "404 404 Not Found\n" {
		t.Errorf("one.test after reload: %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("proxy:\n  routes:\n    - host: a.test\n      backends: [\"x\"]\n"), 0o600)
	err := run(t.Context(), []string{"-config", path}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "line 4: proxy.routes[0].backends[0]") {
		t.Errorf("run = %v", err)
	}
}

func TestExampleConfigParses(t *testing.T) {
	f, err := config.Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Proxy.Build(nil); err != nil {
		t.Fatal(err)
	}
}
