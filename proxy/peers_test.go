package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hairpin-go/hairpin/internal/interop"
)

// writePEM writes cert and key files for cert and returns their paths.
func writePEM(t testing.TB, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	var cb bytes.Buffer
	pem.Encode(&cb, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var kb bytes.Buffer
	pem.Encode(&kb, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	must(t, os.WriteFile(certFile, cb.Bytes(), 0o600))
	must(t, os.WriteFile(keyFile, kb.Bytes(), 0o600))
	return certFile, keyFile
}

// freePort picks a loopback port for a peer that cannot report its own.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startPeer runs cmd until the test ends and waits until addr accepts.
func startPeer(t testing.TB, cmd *exec.Cmd, addr string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", cmd.Path, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s: %s", cmd.Path, addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpenSSLClientAndServer: openssl s_client with -servername reaches the
// openssl s_server that holds that name, and verifies its certificate: the
// TLS session is end to end.
func TestOpenSSLClientAndServer(t *testing.T) {
	paths := interop.Need(t, "openssl")
	var p Proxy
	certs := map[string]string{}
	for _, name := range []string{"alpha.test", "beta.test"} {
		cert, _ := testCert(t, name)
		cf, kf := writePEM(t, cert)
		certs[name] = cf
		addr := freePort(t)
		cmd := exec.CommandContext(t.Context(), paths["openssl"], "s_server", "-accept", addr, "-cert", cf, "-key", kf, "-www", "-quiet")
		startPeer(t, cmd, addr)
		must(t, p.AddSNIRoute(name, &Pool{Backends: []string{addr}, HealthCheck: HealthCheck{Interval: -1}}))
	}
	paddr := serve(t, &p)
	for _, tt := range []struct{ name, version string }{
		{"alpha.test", "-tls1_3"}, {"beta.test", "-tls1_3"}, {"alpha.test", "-tls1_2"}, {"beta.test", "-tls1_2"},
	} {
		name := tt.name
		cmd := exec.CommandContext(t.Context(), paths["openssl"], "s_client", "-connect", paddr, "-servername", name,
			"-CAfile", certs[name], "-verify_return_error", "-verify_hostname", name, "-brief", tt.version)
		cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("s_client %s: %v\n%s", name, err, out)
		}
		wantVersion := map[string]string{"-tls1_3": "TLSv1.3", "-tls1_2": "TLSv1.2"}[tt.version]
		if !bytes.Contains(out, []byte("Verification: OK")) || !bytes.Contains(out, []byte("CN = "+name)) ||
			!bytes.Contains(out, []byte("Protocol version: "+wantVersion)) {
			t.Errorf("s_client %s did not see the backend's certificate:\n%s", name, out)
		}
	}
}

// TestCurlResolve: curl --resolve reaches Go TLS backends by name through the
// proxy, and a plain HTTP route by Host.
func TestCurlResolve(t *testing.T) {
	paths := interop.Need(t, "curl")
	var p Proxy
	cas := map[string]string{}
	for _, name := range []string{"one.test", "two.test"} {
		cert, _ := testCert(t, name)
		cf, _ := writePEM(t, cert)
		cas[name] = cf
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", name, r.Proto)
		}))
		s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.EnableHTTP2 = true
		s.StartTLS()
		t.Cleanup(s.Close)
		must(t, p.AddSNIRoute(name, &Pool{Backends: []string{hostport(s)}}))
		plain := httpBackend(t, "plain-"+name)
		must(t, p.AddHTTPHostRoute(name, &Pool{Backends: []string{hostport(plain)}}))
	}
	paddr := serve(t, &p)
	_, port, _ := net.SplitHostPort(paddr)
	for _, name := range []string{"one.test", "two.test"} {
		for _, tt := range []struct{ url, want string }{
			{"https://" + name + ":" + port + "/", name + " HTTP/2.0"},
			{"http://" + name + ":" + port + "/p", "plain-" + name + " GET /p 0"},
		} {
			out, err := exec.CommandContext(t.Context(), paths["curl"], "-sS", "--max-time", "10",
				"--resolve", name+":"+port+":127.0.0.1", "--cacert", cas[name], tt.url).CombinedOutput()
			if err != nil || string(out) != tt.want {
				t.Errorf("curl %s = %q, %v; want %q", tt.url, out, err, tt.want)
			}
		}
	}
}

// TestHAProxyBackendSeesClient: HAProxy with accept-proxy behind our proxy
// reports the original client address, for PROXY v1 and v2.
func TestHAProxyBackendSeesClient(t *testing.T) {
	paths := interop.Need(t, "haproxy")
	for _, v := range []ProxyProtocol{ProxyProtocolV1, ProxyProtocolV2} {
		t.Run(v.String(), func(t *testing.T) {
			addr := freePort(t)
			cfg := fmt.Sprintf(`global
  log stderr format raw local0 emerg
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend fe
  bind %s accept-proxy
  http-request return status 200 content-type text/plain lf-string "%%[src]:%%[src_port] %%[fc_pp_authority]"
`, addr)
			file := filepath.Join(t.TempDir(), "haproxy.cfg")
			must(t, os.WriteFile(file, []byte(cfg), 0o600))
			startPeer(t, exec.CommandContext(t.Context(), paths["haproxy"], "-db", "-f", file), addr)

			var p Proxy
			must(t, p.AddHTTPHostRoute("hap.test", &Pool{Backends: []string{addr}, ProxyProtocol: v, HealthCheck: HealthCheck{Interval: -1}}))
			paddr := serve(t, &p)
			c, err := net.Dial("tcp", paddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: hap.test\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := c.LocalAddr().String()
			if v == ProxyProtocolV2 {
				want += " hap.test"
			} else {
				want += " "
			}
			if string(body) != want {
				t.Errorf("HAProxy saw %q, want %q (the client's own address)", body, want)
			}
		})
	}
}
