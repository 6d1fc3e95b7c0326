package proxy

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// echConfig builds an ECHConfig (draft-ietf-tls-esni, version 0xfe0d) for
// X25519, HKDF-SHA256, AES-128-GCM and the given public name.
func echConfig(t testing.TB, publicName string) (config, list []byte, key *ecdh.PrivateKey) {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u16 := func(b []byte, v int) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }
	var c []byte
	c = append(c, 7)   // config_id
	c = u16(c, 0x0020) // DHKEM(X25519, HKDF-SHA256)
	pub := key.PublicKey().Bytes()
	c = u16(c, len(pub))
	c = append(c, pub...)
	c = u16(c, 4)
	c = u16(c, 0x0001) // HKDF-SHA256
	c = u16(c, 0x0001) // AES-128-GCM
	c = append(c, 0)   // maximum_name_length
	c = append(c, byte(len(publicName)))
	c = append(c, publicName...)
	c = u16(c, 0) // extensions
	config = u16(u16(nil, 0xfe0d), len(c))
	config = append(config, c...)
	list = append(u16(nil, len(config)), config...)
	return config, list, key
}

// TestECHRoutesOnOuterName: under ECH the proxy sees only the public name;
// it routes on it, and the backend holding the ECH key completes the
// handshake for the inner name.
func TestECHRoutesOnOuterName(t *testing.T) {
	config, list, key := echConfig(t, "public.test")
	cert, roots := testCert(t, "secret.test", "public.test")
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates:             []tls.Certificate{cert},
		MinVersion:               tls.VersionTLS13,
		EncryptedClientHelloKeys: []tls.EncryptedClientHelloKey{{Config: config, PrivateKey: key.Bytes(), SendAsRetry: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if tc := c.(*tls.Conn); tc.Handshake() == nil {
				io.WriteString(tc, tc.ConnectionState().ServerName)
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })

	decoy := newTLSBackend(t, "secret.test")
	var p Proxy
	must(t, p.AddSNIRoute("public.test", &Pool{Backends: []string{l.Addr().String()}}))
	must(t, p.AddSNIRoute("secret.test", &Pool{Backends: []string{decoy.addr}})) // invisible under ECH
	addr := serve(t, &p)

	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		ServerName:                     "secret.test",
		RootCAs:                        roots,
		MinVersion:                     tls.VersionTLS13,
		EncryptedClientHelloConfigList: list,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.ConnectionState().ECHAccepted {
		t.Error("ECH not accepted")
	}
	got, _ := io.ReadAll(c)
	if string(got) != "secret.test" {
		t.Errorf("backend saw inner name %q, want secret.test", got)
	}
	if decoy.count() != 0 {
		t.Error("the route for the inner name was used")
	}
}
