package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/proctest"
	"github.com/hairpin-go/hairpin/internal/leakcheck"
)

var sniproxyBin = &proctest.Binary{Dir: "."}

func TestMain(m *testing.M) {
	code := leakcheck.Run(m)
	sniproxyBin.Cleanup()
	os.Exit(code)
}

func backend(t *testing.T, name string) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func get(t *testing.T, addr, host string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
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

func tryGet(addr, host string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}}
	resp, err := c.Get("http://" + host + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b), err
}

// keepAlive sends one request for host on a new connection, reads the
// answer and returns the connection, still open and routed. A 503 (the
// source's slot still held by a connection the test closed, which the
// proxy releases when it notices) is retried for up to 5 s.
func keepAlive(t *testing.T, addr, host string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			t.Fatalf("kept-alive request for %s: %v", host, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 200:
			t.Cleanup(func() { c.Close() })
			return c
		case resp.StatusCode == 503 && time.Now().Before(deadline):
			c.Close()
			time.Sleep(20 * time.Millisecond)
		default:
			c.Close()
			t.Fatalf("kept-alive request for %s: %s", host, resp.Status)
		}
	}
}

func proxyConfig(listen, host, backend string) string {
	return fmt.Sprintf("proxy:\n  http: [%q]\n  routes:\n    - host: %s\n      http: [%q]\n      allow: [\"127.0.0.0/8\"]\n", listen, host, backend)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReload runs the binary: SIGHUP swaps the routes (a new hostname is
// routed, the removed one is not), names a limit change as waiting for a
// restart, and a bad file is rejected with the old routes still serving.
func TestReload(t *testing.T) {
	bin := sniproxyBin.Path(t)
	one, two := backend(t, "one"), backend(t, "two")
	addr := proctest.FreePort(t)
	path := filepath.Join(t.TempDir(), "sniproxy.yaml")
	writeFile(t, path, proxyConfig(addr, "one.test", one))
	p := proctest.Start(t, exec.Command(bin, "-config", path))
	n := p.WaitFor(t, 0, "sniproxy ready", 10*time.Second)
	if got := get(t, addr, "one.test"); got != "200 one" {
		t.Fatalf("one.test: %s", got)
	}

	writeFile(t, path, proxyConfig(addr, "one.test", one)+"      balance: nosuch\n")
	p.Signal(t, syscall.SIGHUP)
	n = p.WaitFor(t, n, "reload rejected", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, `line 7: proxy.routes[0].balance: \"nosuch\"`) {
		t.Errorf("the rejection does not name the key, line and value:\n%s", out)
	}
	if got := get(t, addr, "one.test"); got != "200 one" {
		t.Fatalf("one.test after a bad file: %s", got)
	}

	// New routes, a limit (applied by a new proxy on the same listener) and
	// a second listener (which waits for a restart).
	next := proxyConfig(addr, "two.test", two)
	next = strings.Replace(next, "  routes:", "  maxConnsPerSource: 1\n  routes:", 1)
	next = strings.Replace(next, `http: ["`+addr+`"]`, `http: ["`+addr+`", "`+proctest.FreePort(t)+`"]`, 1)
	writeFile(t, path, next)
	p.Signal(t, syscall.SIGHUP)
	p.WaitFor(t, n, "take effect at the next restart", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, "restart=[proxy.http]") {
		t.Errorf("the reload does not name exactly proxy.http as waiting for a restart:\n%s", out)
	}
	if got := get(t, addr, "two.test"); got != "200 two" {
		t.Errorf("two.test after reload: %s", got)
	}
	if got := get(t, addr, "one.test"); got != "404 404 Not Found\n" {
		t.Errorf("one.test after reload: %q", got)
	}
	// maxConnsPerSource 1: a kept-alive connection holds the only slot of
	// 127.0.0.1, so a second one is refused.
	held := keepAlive(t, addr, "two.test")
	if got, err := tryGet(addr, "two.test"); err == nil && !strings.HasPrefix(got, "503 ") {
		t.Errorf("a second connection from one source with maxConnsPerSource 1: %q, want it refused", got)
	}
	held.Close()
	p.Signal(t, syscall.SIGTERM)
	if code := p.WaitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// TestShutdownTimeout: SIGTERM with a request open through the proxy exits
// within -shutdown-timeout, closing the connection at the deadline.
func TestShutdownTimeout(t *testing.T) {
	bin := sniproxyBin.Path(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	addr := proctest.FreePort(t)
	path := filepath.Join(t.TempDir(), "sniproxy.yaml")
	writeFile(t, path, proxyConfig(addr, "slow.test", slow.Listener.Addr().String()))
	p := proctest.Start(t, exec.Command(bin, "-config", path, "-shutdown-timeout", "1s"))
	p.WaitFor(t, 0, "sniproxy ready", 10*time.Second)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the backend")
	}
	start := time.Now()
	p.Signal(t, syscall.SIGTERM)
	code := p.WaitExit(t, 10*time.Second)
	if took := time.Since(start); took < 900*time.Millisecond || took > 4*time.Second {
		t.Errorf("exit %s after SIGTERM with -shutdown-timeout 1s and a request open", took.Round(time.Millisecond))
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if out := p.Output(); !strings.Contains(out, "shutdown reached -shutdown-timeout") {
		t.Errorf("no log of the connections closed at the deadline:\n%s", out)
	}
}

// TestHelpCheckAndBadConfig: -h prints the description and the common
// flags and exits 0; -check passes example.yaml; a bad file fails the start
// naming its key and line.
func TestHelpCheckAndBadConfig(t *testing.T) {
	bin := sniproxyBin.Path(t)
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), description+"\n") || !strings.Contains(string(out), "-shutdown-timeout") ||
		!strings.Contains(string(out), "-config") || !strings.Contains(string(out), "-check") {
		t.Fatalf("-h: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "-config", "example.yaml", "-check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("example.yaml -check: %v\n%s", err, out)
	}
	path := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, path, "proxy:\n  http: [\"127.0.0.1:0\"]\n  routes:\n    - host: a.test\n      backends: [\"x\"]\n      allow: []\n")
	var stdout, stderr strings.Builder
	if code := run([]string{"-config", path}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "line 5: proxy.routes[0].backends[0]") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if code := run([]string{}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "-config is required") {
		t.Errorf("no -config: exit %d, stderr %q", code, stderr.String())
	}
}
