package relay

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLoggerFactory routes the engine's log lines to our slog.Logger. Every
// level of the engine's lines goes to Debug: they are per-request and
// per-packet outcomes ("Failed to send ChannelData", "failed to handle
// datagram"), which a remote client can cause at will, so at Warn or Error
// they would let anyone flood the log. What an operator must see the relay
// logs itself (denials, limits, listener errors, returned from Serve).
type pionLoggerFactory struct{ l *slog.Logger }

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.l.With("engine", scope)}
}

type pionLogger struct{ l *slog.Logger }

func (p pionLogger) log(level slog.Level, msg string) {
	p.l.Log(context.Background(), level, "relay: "+msg)
}

func (p pionLogger) logf(level slog.Level, format string, args ...any) {
	if p.l.Enabled(context.Background(), level) {
		p.log(level, fmt.Sprintf(format, args...))
	}
}

func (p pionLogger) Trace(msg string)                  {}
func (p pionLogger) Tracef(format string, args ...any) {}
func (p pionLogger) Debug(msg string)                  { p.log(slog.LevelDebug-4, msg) }
func (p pionLogger) Debugf(format string, args ...any) { p.logf(slog.LevelDebug-4, format, args...) }
func (p pionLogger) Info(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Infof(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p pionLogger) Warn(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Warnf(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p pionLogger) Error(msg string)                  { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Errorf(format string, args ...any) { p.logf(slog.LevelDebug, format, args...) }
