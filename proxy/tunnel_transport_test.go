package proxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
)

// writeLog is a net.Conn that records each Write as one entry; with gate
// set, the first Write waits (after announcing itself on entered) until
// gate is closed.
type writeLog struct {
	net.Conn // nil: only Write, CloseWrite and Close are used
	mu       sync.Mutex
	writes   [][]byte
	wrote    chan struct{} // closed at the first Write's end
	gate     chan struct{}
	entered  chan struct{}
	halfDone bool
	closed   bool
}

func newWriteLog() *writeLog { return &writeLog{wrote: make(chan struct{})} }

func (w *writeLog) Write(b []byte) (int, error) {
	w.mu.Lock()
	entered := w.entered
	w.entered = nil
	w.mu.Unlock()
	if entered != nil {
		close(entered)
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, bytes.Clone(b))
	if len(w.writes) == 1 {
		close(w.wrote)
	}
	return len(b), nil
}

func (w *writeLog) CloseWrite() error { w.mu.Lock(); w.halfDone = true; w.mu.Unlock(); return nil }
func (w *writeLog) Close() error      { w.mu.Lock(); w.closed = true; w.mu.Unlock(); return nil }

func (w *writeLog) log() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, b := range w.writes {
		out = append(out, string(b))
	}
	return out
}

// yamuxHdr returns a yamux header of type typ with length n.
func yamuxHdr(typ byte, flags uint16, n uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], 7) // stream
	binary.BigEndian.PutUint32(h[8:], n)
	return h
}

// TestYamuxWire: a data frame's header and body leave in one write (one
// TLS record), up to one record's worth of body; headers without a body
// leave at once; the bytes are unchanged.
func TestYamuxWire(t *testing.T) {
	big := strings.Repeat("b", maxCoalesced+100)
	for _, tc := range []struct {
		name   string
		writes [][]byte
		want   []int // sizes of the writes that reach the connection
	}{
		{"data frame", [][]byte{yamuxHdr(0, 0, 5), []byte("hello")}, []int{17}},
		{"window update", [][]byte{yamuxHdr(1, 1, 0)}, []int{12}},
		{"empty data frame with FIN", [][]byte{yamuxHdr(0, 4, 0)}, []int{12}},
		{"ping then data", [][]byte{yamuxHdr(2, 1, 9), yamuxHdr(0, 0, 2), []byte("hi")}, []int{12, 14}},
		{"large body", [][]byte{yamuxHdr(0, 0, uint32(len(big))), []byte(big)}, []int{yamuxHeaderSize + maxCoalesced, 100}},
		{"two frames", [][]byte{yamuxHdr(0, 0, 1), []byte("a"), yamuxHdr(0, 0, 1), []byte("b")}, []int{13, 13}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWriteLog()
			yw := &yamuxWire{Conn: w}
			var sent []byte
			for _, b := range tc.writes {
				if n, err := yw.Write(b); n != len(b) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", len(b), n, err)
				}
				sent = append(sent, b...)
			}
			var sizes []int
			var got []byte
			for _, b := range w.log() {
				sizes = append(sizes, len(b))
				got = append(got, b...)
			}
			if !slices.Equal(sizes, tc.want) {
				t.Errorf("writes of %v bytes, want %v", sizes, tc.want)
			}
			if string(got) != string(sent) {
				t.Errorf("bytes changed on the way")
			}
		})
	}
}
