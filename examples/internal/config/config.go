// Package config reads the YAML configuration shared by the example binaries.
//
// One file serves them all: examples/gateway reads every section, and each
// single-package example (splitdns, sniproxy, turnserver, stunserver) reads the
// same file and uses its own section, so a gateway configuration can be tried
// piece by piece.
//
// Parsing is strict: an unknown key, a value of the wrong type, or a value that
// fails validation is an error that names the key path and the line, e.g.
//
//	config: line 12: dns.views[1].networks[0]: bad prefix "192.168.0.0/33": ...
//
// Typical usage:
//
//	f, err := config.Load(path)
//	if err != nil {
//		return err // already names the line and the field
//	}
//	if f.DNS != nil { ... }
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is a configuration value that failed validation. Path is the
// dotted YAML path from the root ("dns.views[1].networks[0]"); Line is filled
// in by Parse from the document.
type FieldError struct {
	Path  string
	Value any
	Line  int
	Err   error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Path)
	b.WriteString(": ")
	if e.Value != nil {
		if s, ok := e.Value.(string); ok {
			fmt.Fprintf(&b, "%q: ", s)
		} else {
			fmt.Fprintf(&b, "%v: ", e.Value)
		}
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Errorf returns a *FieldError for the value at path. Validation code in the
// section files uses it; Parse adds the line number.
func Errorf(path string, value any, format string, args ...any) error {
	return &FieldError{Path: path, Value: value, Err: fmt.Errorf(format, args...)}
}

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse decodes data strictly and validates every section present.
func Parse(data []byte) (*File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(err)
	}
	f := new(File)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}
	if err := f.validate(); err != nil {
		return nil, withLines(err, &root)
	}
	return f, nil
}

var (
	unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type config\.(\w+)`)
	yamlPrefix   = regexp.MustCompile(`^yaml: (unmarshal errors:\s*)?`)
)

// yamlError rewrites yaml.v3's messages into ours: "config: line 3: unknown key "foo" in Relay".
func yamlError(err error) error {
	msg := err.Error()
	msg = unknownField.ReplaceAllString(msg, `line $1: unknown key "$2" in the $3 section`)
	msg = yamlPrefix.ReplaceAllString(msg, "")
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return fmt.Errorf("config: %s", strings.Join(lines, "; "))
}

// withLines fills in Line on every *FieldError in err (a single error or an
// errors.Join tree) by walking root along the error's path.
func withLines(err error, root *yaml.Node) error {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Line == 0 {
		fe.Line = lineOf(root, fe.Path)
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			withLines(e, root)
		}
	}
	return err
}

// lineOf returns the line of the node at path ("a.b[2].c"), or of the deepest
// node on the way if the path ends early (a missing key is reported at its parent).
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, seg := range splitPath(path) {
		next, at := step(n, seg)
		if next == nil {
			break
		}
		n, line = next, at
	}
	return line
}

// splitPath turns "dns.views[1].records[0]" into ["dns", "views", "[1]", "records", "[0]"].
func splitPath(path string) []string {
	var segs []string
	for _, part := range strings.Split(path, ".") {
		for part != "" {
			i := strings.IndexByte(part, '[')
			if i < 0 {
				segs = append(segs, part)
				break
			}
			if i > 0 {
				segs = append(segs, part[:i])
			}
			j := strings.IndexByte(part[i:], ']')
			if j < 0 {
				segs = append(segs, part[i:])
				break
			}
			segs = append(segs, part[i:i+j+1])
			part = part[i+j+1:]
		}
	}
	return segs
}

// step follows one path segment from n. It returns the node reached and the
// line to report for it: a mapping entry is reported on its key's line (a
// block value starts on the next one), a sequence item on its own.
func step(n *yaml.Node, seg string) (*yaml.Node, int) {
	if strings.HasPrefix(seg, "[") && strings.HasSuffix(seg, "]") {
		i, err := strconv.Atoi(seg[1 : len(seg)-1])
		if err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
			return nil, 0
		}
		return n.Content[i], n.Content[i].Line
	}
	if n.Kind != yaml.MappingNode {
		return nil, 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == seg {
			return n.Content[i+1], n.Content[i].Line
		}
	}
	return nil, 0
}
