package relay

import (
	"bytes"
	"log/slog"
	"testing"
)

// The engine's complaints about single packets must not reach an operator's
// log at Info or above: a remote client can trigger them at will.
func TestEngineLinesStayAtDebug(t *testing.T) {
	var buf bytes.Buffer
	l := pionLoggerFactory{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}.NewLogger("turn")
	l.Error("Failed to send ChannelData")
	l.Errorf("failed to handle datagram: %v", "x")
	l.Warn("w")
	l.Warnf("w %d", 1)
	l.Info("i")
	if buf.Len() != 0 {
		t.Fatalf("engine lines logged at Info or above:\n%s", buf.String())
	}
}
