package dnssplit

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// records returns the logged records (JSON lines) at level.
func (b *syncBuffer) count(level string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.b.String(), `"level":"`+level+`"`)
}

// TestRefusalsLogOnceAWarn: refusals any host can trigger log at Debug each,
// count in Stats, and give at most one Warn summary per interval.
func TestRefusalsLogOnceAWarn(t *testing.T) {
	var buf syncBuffer
	s := splitServer(t)
	s.RateLimit = &RateLimit{Disabled: true}
	s.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	now := time.Now()
	s.clock = func() time.Time { return now }
	defer s.Close()
	outside := Client{Source: netip.MustParseAddr("198.51.100.7")}
	const n = 500
	for range n {
		// Recursion is not offered outside: REFUSED.
		if r := s.Resolve(t.Context(), q("www.example.net.", dns.TypeA), outside, false); r.Rcode != dns.RcodeRefused {
			t.Fatalf("rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	}
	if got := s.Stats().Queries["outside"]["REFUSED"]; got != n {
		t.Fatalf("Stats counts %d refused, want %d", got, n)
	}
	if w := buf.count("WARN"); w != 1 {
		t.Fatalf("%d Warn lines for %d refusals in one interval, want 1", w, n)
	}
	if d := buf.count("DEBUG"); d < n {
		t.Fatalf("%d Debug lines for %d refusals", d, n)
	}
	now = now.Add(refusalSummaryInterval)
	s.Resolve(t.Context(), q("www.example.net.", dns.TypeA), outside, false)
	if w := buf.count("WARN"); w != 2 {
		t.Fatalf("%d Warn lines after the interval, want 2", w)
	}
	if !strings.Contains(buf.b.String(), `"queries":500`) {
		t.Fatalf("the second summary does not count the 499 refusals after the first and the new one:\n%s", buf.b.String())
	}
}
