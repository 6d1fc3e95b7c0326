package config

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParseErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"unknown top-level key", "metrics: 127.0.0.1:9090\nbogus: 1\n", []string{"line 2: bogus: unknown key"}},
		{"bad metrics address", "log:\n  format: text\nmetrics: nowhere\n", []string{"line 3", "metrics", `"nowhere"`}},
		{"bad log format", "log:\n  level: info\n  format: xml\n", []string{"line 3", "log.format", `"xml"`}},
		{"two errors both reported", "metrics: x\nlog:\n  level: loud\n", []string{"line 1", "line 3", "log.level"}},
		{"not yaml", "metrics: [\n", []string{"config: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	f, err := Parse([]byte("metrics: 127.0.0.1:9090\nlog:\n  format: json\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Metrics != "127.0.0.1:9090" || f.Log.Format != "json" {
		t.Fatalf("got %+v", f)
	}
	if f.DNS != nil || f.Proxy != nil || f.Relay != nil || f.NAT != nil {
		t.Fatal("absent sections must stay nil")
	}
	if _, err := Parse(nil); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestLineOfPaths(t *testing.T) {
	doc := "a:\n  b:\n    - x\n    - c: 1\n      d: 2\n"
	for path, want := range map[string]int{
		"a":          1,
		"a.b":        2,
		"a.b[1]":     4,
		"a.b[1].d":   5,
		"a.b[7]":     2, // past the end: the sequence's key
		"a.missing":  1, // missing key: its parent's key
		"nothing.at": 1,
	} {
		root := mustNode(t, doc)
		if got := lineOf(root, path); got != want {
			t.Errorf("lineOf(%q) = %d, want %d", path, got, want)
		}
	}
}

func mustNode(t *testing.T, doc string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	return &n
}
