package relay

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

var quiet = slog.New(slog.DiscardHandler)

// seedMessages are real client messages: what a TURN client sends in one
// session, authenticated as alice/pw in realm "hairpin" with nonce "n".
func seedMessages() [][]byte {
	key := longTermKey("alice", defaultRealm, "pw")
	auth := []stun.Setter{stun.NewUsername("alice"), stun.NewRealm(defaultRealm), stun.NewNonce("n"), stun.MessageIntegrity(key), stun.Fingerprint}
	build := func(t stun.MessageType, attrs ...stun.Setter) []byte {
		s := append([]stun.Setter{stun.NewTransactionIDSetter([12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}), t}, attrs...)
		return stun.MustBuild(s...).Raw
	}
	peer := peerAttr(netip.MustParseAddrPort("127.0.0.1:9"))
	v6peer := peerAttr(netip.MustParseAddrPort("[64:ff9b::7f00:1]:9"))
	ch := stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{0x40, 0, 0, 0}}
	cd := make([]byte, 8)
	binary.BigEndian.PutUint16(cd, 0x4000)
	binary.BigEndian.PutUint16(cd[2:], 4)
	return [][]byte{
		build(stun.BindingRequest, stun.Fingerprint),
		build(stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport),
		build(stun.NewType(stun.MethodAllocate, stun.ClassRequest), append([]stun.Setter{udpTransport}, auth...)...),
		build(stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), append([]stun.Setter{peer, v6peer}, auth...)...),
		build(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), append([]stun.Setter{ch, peer}, auth...)...),
		build(stun.NewType(stun.MethodRefresh, stun.ClassRequest), auth...),
		build(stun.NewType(stun.MethodSend, stun.ClassIndication), peer, stun.RawAttribute{Type: stun.AttrData, Value: []byte("data")}),
		build(stun.NewType(stun.MethodConnect, stun.ClassRequest), append([]stun.Setter{peer}, auth...)...),
		cd,
	}
}

// TestWriteFuzzCorpus refreshes testdata/fuzz from seedMessages when
// HAIRPIN_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("HAIRPIN_WRITE_CORPUS") != "1" {
		t.Skip("set HAIRPIN_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	for _, name := range []string{"FuzzInspect", "FuzzServePacket", "FuzzStream"} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, m := range seedMessages() {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", m)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// FuzzInspect runs arbitrary client frames through our filter: no panic,
// and anything it passes to the engine is a ChannelData or STUN message.
func FuzzInspect(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(m)
	}
	s := &Server{Users: map[string]string{"alice": "pw"}, Secrets: []string{"s"}, Logger: quiet}
	s.init()
	src := &frameSource{client: netip.MustParseAddrPort("192.0.2.1:1000"), server: netip.MustParseAddrPort("192.0.2.2:3478"),
		transport: "udp", reply: func([]byte) {}}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := append([]byte(nil), b...)
		if s.inspect(b, src) && !isChannelData(b) && !stun.IsMessage(b) {
			t.Fatalf("passed a frame that is neither STUN nor ChannelData: %x", b)
		}
		if string(orig) != string(b) {
			t.Fatalf("inspect modified the frame")
		}
	})
}

// FuzzServePacket sends arbitrary datagrams to a running relay (filter and
// engine): it must survive and still answer a Binding request.
func FuzzServePacket(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(m)
	}
	s := &Server{Users: map[string]string{"alice": "pw"}, Limits: Limits{UnauthorizedBurst: -1}, Logger: quiet, ReadBatch: 4}
	addr := serve(f, s, "udp")
	c, err := net.Dial("udp", addr)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 2048)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := c.Write(b); err != nil {
			t.Skip(err)
		}
		if _, err := c.Write(binding.Raw); err != nil {
			t.Fatal(err)
		}
		for {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("relay stopped answering after %x: %v", b, err)
			}
			m := &stun.Message{Raw: buf[:n]}
			if m.Decode() == nil && m.TransactionID == binding.TransactionID {
				return
			}
		}
	})
}

// FuzzStream feeds an arbitrary byte stream to the TCP framer and filter.
func FuzzStream(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(m)
	}
	s := &Server{Users: map[string]string{"alice": "pw"}, Logger: quiet}
	s.init()
	f.Fuzz(func(t *testing.T, b []byte) {
		a, z := net.Pipe()
		defer a.Close()
		w := newListener(s, nil, "tcp")
		sc := &streamConn{Conn: z, w: w, store: make([]byte, 64)}
		sc.buf = sc.store[:0]
		sc.src = frameSource{client: netip.MustParseAddrPort("192.0.2.1:1000"), transport: "tcp", reply: func([]byte) {}}
		go func() {
			_, _ = a.Write(b)
			a.Close()
		}()
		p := make([]byte, 1600)
		for {
			n, err := sc.Read(p)
			if err != nil {
				break
			}
			if n == 0 || (!isChannelData(p[:n]) && !stun.IsMessage(p[:n])) {
				t.Fatalf("Read returned a non-frame %x", p[:n])
			}
		}
		z.Close()
	})
}
