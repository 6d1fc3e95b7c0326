package proxy

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// The tunnel between an [Agent] and an [Edge] is TLS 1.3 (inside QUIC, or
// over TCP) with mutual authentication by pinned ed25519 keys: each side
// presents a self-signed certificate made from its key at start-up, and the
// other side accepts it only if its public key is the one configured. No CA
// is involved, so there is nothing to renew and nothing a third party can
// issue.

// tunnelALPN names the protocol on both transports; QUIC requires one.
const tunnelALPN = "hairpin-tunnel/1"

// GenerateTunnelKey returns a new ed25519 key for an [Agent] or an [Edge].
func GenerateTunnelKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("proxy: generate tunnel key: %w", err)
	}
	return k, nil
}

// MarshalTunnelKey encodes k as a PKCS #8 "PRIVATE KEY" PEM block, the form
// `openssl genpkey -algorithm ed25519` writes.
func MarshalTunnelKey(k ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("proxy: marshal tunnel key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseTunnelKey decodes a PKCS #8 PEM ed25519 private key (as
// MarshalTunnelKey or `openssl genpkey -algorithm ed25519` writes it).
func ParseTunnelKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("proxy: tunnel key: no PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("proxy: tunnel key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("proxy: tunnel key: %T, want ed25519", k)
	}
	return ek, nil
}

// LoadTunnelKey reads a key file written by MarshalTunnelKey.
func LoadTunnelKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("proxy: tunnel key: %w", err)
	}
	return ParseTunnelKey(b)
}

// publicKeyPrefix marks the text form of a public key, so that a key of
// another algorithm can be told apart later.
const publicKeyPrefix = "ed25519:"

// FormatPublicKey returns the text form of a public key: "ed25519:" and
// the 32 bytes in standard base64, as they are written in configuration.
func FormatPublicKey(k ed25519.PublicKey) string {
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(k)
}

// ParsePublicKey parses the text form FormatPublicKey returns (the prefix is
// optional), or a "PUBLIC KEY" PEM block (`openssl pkey -pubout`).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return nil, errors.New("proxy: public key: no PUBLIC KEY PEM block")
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("proxy: public key: %w", err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("proxy: public key: %T, want ed25519", k)
		}
		return ek, nil
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, publicKeyPrefix))
	if err != nil {
		return nil, fmt.Errorf("proxy: public key: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("proxy: public key: %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// selfSigned makes the certificate a tunnel end presents: only its public
// key matters to the peer.
func selfSigned(k ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "hairpin tunnel"},
		NotBefore:    time.Now().Add(-time.Hour), // peers with a clock a little behind
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
}

// peerKey returns the ed25519 key of the leaf certificate the peer sent.
func peerKey(rawCerts [][]byte) (ed25519.PublicKey, error) {
	if len(rawCerts) == 0 {
		return nil, errors.New("proxy: tunnel peer sent no certificate")
	}
	c, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("proxy: tunnel peer certificate: %w", err)
	}
	k, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("proxy: tunnel peer key is %T, want ed25519", c.PublicKey)
	}
	return k, nil
}

// serverTLS is the edge's side: it requires a client certificate whose key
// known accepts. The handshake's CertificateVerify proves the peer holds the
// matching private key, so comparing the leaf's key is the whole check.
func serverTLS(k ed25519.PrivateKey, known func(ed25519.PublicKey) bool) (*tls.Config, error) {
	cert, err := selfSigned(k)
	if err != nil {
		return nil, fmt.Errorf("proxy: edge certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{tunnelALPN},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			pk, err := peerKey(raw)
			if err != nil {
				return err
			}
			if !known(pk) {
				return errors.New("proxy: unknown agent key " + FormatPublicKey(pk))
			}
			return nil
		},
	}, nil
}

// clientTLS is the agent's side: the edge must present the pinned key.
func clientTLS(k ed25519.PrivateKey, edge ed25519.PublicKey) (*tls.Config, error) {
	cert, err := selfSigned(k)
	if err != nil {
		return nil, fmt.Errorf("proxy: agent certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		NextProtos:         []string{tunnelALPN},
		ServerName:         "hairpin-tunnel",
		InsecureSkipVerify: true, // replaced by the key pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			pk, err := peerKey(raw)
			if err != nil {
				return err
			}
			if !pk.Equal(edge) {
				return errors.New("proxy: edge key " + FormatPublicKey(pk) + " is not the pinned " + FormatPublicKey(edge))
			}
			return nil
		},
	}, nil
}
