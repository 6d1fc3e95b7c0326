package dnssplit

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// warnings is a slog handler that keeps the Warn records' attributes.
type warnings struct {
	mu   sync.Mutex
	recs []map[string]any
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Any(); return true })
	w.mu.Lock()
	w.recs = append(w.recs, m)
	w.mu.Unlock()
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

func (w *warnings) forZone(zone string) []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []map[string]any
	for _, m := range w.recs {
		if m["zone"] == zone {
			out = append(out, m)
		}
	}
	return out
}

// TestReloadSerials: across a reload (what a restart of the gateway with a
// new {public} address does to the data), a zone's serial stays when its
// records are the same and rises when they changed. Before, the new records'
// serial came from the clock at load time, so a changed zone could come back
// with a lower serial than the one the secondaries had (they kept the old
// address) and an unchanged zone with another one (needless transfers).
func TestReloadSerials(t *testing.T) {
	outside := func(addr string, oneByOne bool) *View {
		r := new(Records)
		r.AddZone("example.com.")
		lines := []string{"blog.example.com. 300 IN A " + addr, "www.example.com. 300 IN A " + addr, "example.com. 300 IN MX 10 mail.example.com.", "mail.example.com. 300 IN A 203.0.113.25"}
		if oneByOne { // each Add raises the serial: the old data's serial is then not the clock's
			for _, l := range lines {
				if err := r.AddString(l); err != nil {
					t.Fatal(err)
				}
			}
		} else if err := r.AddString(lines...); err != nil {
			t.Fatal(err)
		}
		return &View{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: r}
	}
	w := &warnings{}
	s := &Server{Views: []*View{outside("203.0.113.1", true)}, Logger: slog.New(w)}
	addr := start(t, s)
	serial := func() uint32 {
		t.Helper()
		r := query(t, "udp", "127.0.0.1", addr, q("example.com.", dns.TypeSOA))
		if len(r.Answer) != 1 {
			t.Fatalf("SOA: %v", r)
		}
		return r.Answer[0].(*dns.SOA).Serial
	}
	s1 := serial()

	s.SetViews([]*View{outside("203.0.113.1", false)})
	if got := serial(); got != s1 {
		t.Fatalf("same records reloaded: serial %d, was %d", got, s1)
	}
	s.SetViews([]*View{outside("198.51.100.1", false)})
	s2 := serial()
	if !serialLess(s1, s2) {
		t.Fatalf("changed records reloaded: serial %d, was %d", s2, s1)
	}
	if got := firstA(query(t, "udp", "127.0.0.1", addr, q("blog.example.com.", dns.TypeA))); got != "198.51.100.1" {
		t.Fatalf("after reload: %s", got)
	}

	// Data that brings its own SOA keeps its serial; a change without a
	// higher one is warned about, an unchanged zone is not.
	explicit := func(soaSerial, a string) *View {
		r := new(Records)
		if err := r.AddString("example.org. 300 IN SOA ns.example.org. h.example.org. "+soaSerial+" 3600 600 604800 60", "a.example.org. 300 IN A "+a); err != nil {
			t.Fatal(err)
		}
		return &View{Name: "org", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: r}
	}
	s.SetViews([]*View{explicit("10", "192.0.2.1")})
	s.SetViews([]*View{explicit("10", "192.0.2.1")})
	if n := len(w.forZone("example.org.")); n != 0 {
		t.Fatalf("unchanged zone warned about: %v", w.forZone("example.org."))
	}
	s.SetViews([]*View{explicit("10", "192.0.2.2")})
	ws := w.forZone("example.org.")
	if len(ws) != 1 || ws[0]["view"] != "org" || ws[0]["oldSerial"] != uint64(10) || ws[0]["newSerial"] != uint64(10) {
		t.Fatalf("changed zone with the same serial: warnings %v", ws)
	}
	s.SetViews([]*View{explicit("11", "192.0.2.3")})
	if ws := w.forZone("example.org."); len(ws) != 1 {
		t.Fatalf("a raised serial warned about: %v", ws)
	}
	r := query(t, "udp", "127.0.0.1", addr, q("example.org.", dns.TypeSOA))
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != 11 {
		t.Fatalf("given serial not kept: %v", r)
	}
}
