package relay

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// rawClient is a minimal TURN client for tests that need to see error codes.
type rawClient struct {
	t                 testing.TB
	conn              net.Conn
	stream            bool
	user, pass, realm string
	nonce             string
	key               []byte
	relayed           netip.AddrPort
	timeout           time.Duration // per read; 0 means 3 s
}

func dialRaw(t testing.TB, network, addr, user, pass string) *rawClient {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, stream: strings.HasPrefix(network, "tcp"), user: user, pass: pass}
}

type peerAttr netip.AddrPort

func (p peerAttr) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	return (&stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}).AddToAs(m, stun.AttrXORPeerAddress)
}

var udpTransport = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

func (c *rawClient) read() (*stun.Message, error) {
	timeout := c.timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var b []byte
	if c.stream {
		hdr := make([]byte, 20)
		if _, err := io.ReadFull(c.conn, hdr); err != nil {
			return nil, err
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[2:4]))
		if _, err := io.ReadFull(c.conn, body); err != nil {
			return nil, err
		}
		b = append(hdr, body...)
	} else {
		buf := make([]byte, 2048)
		n, err := c.conn.Read(buf)
		if err != nil {
			return nil, err
		}
		b = buf[:n]
	}
	m := &stun.Message{Raw: b}
	return m, m.Decode()
}

// do sends a request (authenticated once a nonce is known) and returns the
// response and its error code (0 on success). A 401 or 438 with a nonce is
// answered once more with credentials, as real clients do.
func (c *rawClient) do(method stun.Method, attrs ...stun.Setter) (*stun.Message, int) {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != "" {
			c.key = longTermKey(c.user, c.realm, c.pass)
			setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.MessageIntegrity(c.key))
		}
		setters = append(setters, stun.Fingerprint)
		req := stun.MustBuild(setters...)
		if _, err := c.conn.Write(req.Raw); err != nil {
			c.t.Fatal(err)
		}
		for {
			res, err := c.read()
			if err != nil {
				c.t.Fatalf("%s: %v", method, err)
			}
			if res.TransactionID != req.TransactionID {
				continue
			}
			if res.Type.Class == stun.ClassSuccessResponse {
				return res, 0
			}
			var ec stun.ErrorCodeAttribute
			if err := ec.GetFrom(res); err != nil {
				c.t.Fatalf("%s: error response without code: %v", method, err)
			}
			var nonce stun.Nonce
			var realm stun.Realm
			if (ec.Code == 401 || ec.Code == 438) && attempt == 0 && nonce.GetFrom(res) == nil {
				_ = realm.GetFrom(res)
				if c.nonce == "" || ec.Code == 438 {
					c.nonce, c.realm = nonce.String(), realm.String()
					break
				}
			}
			return res, int(ec.Code)
		}
	}
}

func (c *rawClient) allocate() int {
	c.t.Helper()
	_, code := c.allocateWith()
	return code
}

// allocateWith sends a UDP Allocate with attrs and notes the relayed address.
func (c *rawClient) allocateWith(attrs ...stun.Setter) (*stun.Message, int) {
	c.t.Helper()
	res, code := c.do(stun.MethodAllocate, append([]stun.Setter{udpTransport}, attrs...)...)
	if code == 0 {
		var r stun.XORMappedAddress
		if err := r.GetFromAs(res, stun.AttrXORRelayedAddress); err == nil {
			a, _ := netip.AddrFromSlice(r.IP)
			c.relayed = netip.AddrPortFrom(a.Unmap(), uint16(r.Port))
		}
	}
	return res, code
}

func (c *rawClient) permit(peers ...netip.AddrPort) int {
	c.t.Helper()
	var attrs []stun.Setter
	for _, p := range peers {
		attrs = append(attrs, peerAttr(p))
	}
	_, code := c.do(stun.MethodCreatePermission, attrs...)
	return code
}

func (c *rawClient) channelBind(ch uint16, peer netip.AddrPort) int {
	c.t.Helper()
	num := stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(ch >> 8), byte(ch), 0, 0}}
	_, code := c.do(stun.MethodChannelBind, num, peerAttr(peer))
	return code
}

// send sends a Send indication and reports whether the write worked.
func (c *rawClient) send(peer netip.AddrPort, data []byte) {
	c.t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), peerAttr(peer),
		stun.RawAttribute{Type: stun.AttrData, Value: data}, stun.Fingerprint)
	if _, err := c.conn.Write(m.Raw); err != nil {
		c.t.Fatal(err)
	}
}

// channelData sends a ChannelData message.
func (c *rawClient) channelData(ch uint16, data []byte) {
	c.t.Helper()
	b := make([]byte, 4, 4+len(data)+3)
	binary.BigEndian.PutUint16(b, ch)
	binary.BigEndian.PutUint16(b[2:], uint16(len(data)))
	b = append(b, data...)
	if c.stream {
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// readData returns the next Data indication or ChannelData payload (UDP).
func (c *rawClient) readData() ([]byte, error) {
	buf := make([]byte, 2048)
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.conn.Read(buf)
		if err != nil {
			return nil, err
		}
		b := buf[:n]
		if isChannelData(b) {
			l := int(binary.BigEndian.Uint16(b[2:4]))
			return b[4 : 4+l], nil
		}
		m := &stun.Message{Raw: b}
		if m.Decode() == nil && m.Type == stun.NewType(stun.MethodData, stun.ClassIndication) {
			v, err := m.Get(stun.AttrData)
			return v, err
		}
	}
}

// readStreamData returns the next ChannelData payload or Data indication on
// a stream (TCP or TLS), where ChannelData is padded to 4 bytes.
func (c *rawClient) readStreamData() ([]byte, error) {
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(c.conn, hdr); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(hdr[2:4]))
		if isChannelData(hdr) {
			body := make([]byte, (n+3)&^3)
			if _, err := io.ReadFull(c.conn, body); err != nil {
				return nil, err
			}
			return body[:n], nil
		}
		rest := make([]byte, 16+n)
		if _, err := io.ReadFull(c.conn, rest); err != nil {
			return nil, err
		}
		m := &stun.Message{Raw: append(hdr, rest...)}
		if m.Decode() == nil && m.Type == stun.NewType(stun.MethodData, stun.ClassIndication) {
			return m.Get(stun.AttrData)
		}
	}
}
