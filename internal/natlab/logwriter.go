package natlab

import (
	"bytes"
	"sync"
	"testing"
)

// logWriter keeps a started command's output and logs it at cleanup when the
// test failed, so a passing test stays quiet.
type logWriter struct {
	t      testing.TB
	prefix string

	mu  sync.Mutex
	buf bytes.Buffer
}

// flush logs the output if the test failed. Register it with t.Cleanup
// before the command's own cleanup, so it runs after the command is gone.
func (w *logWriter) flush() {
	if !w.t.Failed() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for line := range bytes.Lines(w.buf.Bytes()) {
		w.t.Log(w.prefix + string(bytes.TrimRight(line, "\n")))
	}
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Keep at most the last part of very chatty output.
	const max = 1 << 20
	if w.buf.Len()+len(p) > max {
		w.buf.Reset()
	}
	return w.buf.Write(p)
}
