// Package config reads the YAML configuration shared by the example binaries.
//
// One file serves them all: examples/gateway reads every section, and each
// single-package example (splitdns, sniproxy, turnserver, stunserver) reads the
// same file and uses its own section, so a gateway configuration can be tried
// piece by piece.
//
// The package parses, validates and builds: Parse checks every key and value,
// and each section's Build returns the library value it describes (loading
// zone files, certificates and keys). Running servers is the binaries' job.
//
// Parsing is strict: an unknown key, a value of the wrong type, or a value that
// fails validation is an error that names the key path and the line, e.g.
//
//	config: line 12: dns.views[1].networks[0]: "192.168.0.0/33": want a network such as 192.168.1.0/24 or an address
//	config: line 7: dns.views[0].recurson: unknown key (did you mean recursion?)
//
// Error strings are one line; several errors are joined with "; ", and
// [Errors] lists them one by one.
//
// Typical usage:
//
//	f, err := config.Load(path)
//	if err != nil {
//		return err // already names the line and the key
//	}
//	if f.DNS != nil { srv, setPublic, err := f.DNS.Build(logger); ... }
package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FieldError is a configuration value that failed validation. Path is the
// dotted YAML path from the root ("dns.views[1].networks[0]"); Line is filled
// in from the document.
type FieldError struct {
	Path  string
	Value any
	Line  int
	Err   error
}

func (e *FieldError) Error() string { return "config: " + e.detail() }

// detail is the message without the package prefix, for lists.
func (e *FieldError) detail() string {
	var b strings.Builder
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
	b.WriteString(oneLine(e.Err.Error()))
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Errorf returns a *FieldError for the value at path. Validation code in the
// section files uses it; the line is added from the document.
func Errorf(path string, value any, format string, args ...any) error {
	return &FieldError{Path: path, Value: value, Err: fmt.Errorf(format, args...)}
}

// errorList is several configuration errors. Its string is one line (log
// lines stay whole): "config: line 3: a: ...; line 9: b: ...".
type errorList []error

func (l errorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		if fe, ok := e.(*FieldError); ok {
			parts[i] = fe.detail()
		} else {
			parts[i] = strings.TrimPrefix(oneLine(e.Error()), "config: ")
		}
	}
	return "config: " + strings.Join(parts, "; ")
}

func (l errorList) Unwrap() []error { return l }

// join is errors.Join with a one-line string: nil when every error is nil,
// the error itself when there is one, nested lists flattened.
func join(errs ...error) error {
	var out errorList
	for _, e := range errs {
		switch v := e.(type) {
		case nil:
		case errorList:
			out = append(out, v...)
		default:
			if j, ok := e.(interface{ Unwrap() []error }); ok && !isFieldError(e) {
				for _, inner := range j.Unwrap() {
					if inner != nil {
						out = append(out, inner)
					}
				}
				continue
			}
			out = append(out, e)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}

func isFieldError(e error) bool { _, ok := e.(*FieldError); return ok }

// oneLine folds the newlines of a wrapped error (errors.Join's) into "; ".
func oneLine(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	fields := strings.Split(s, "\n")
	out := fields[:0]
	for _, f := range fields {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return strings.Join(out, "; ")
}

// Errors returns the individual errors in err: the entries of a list from
// Parse or Build, or err itself. -check prints them one per line.
func Errors(err error) []error {
	if err == nil {
		return nil
	}
	var fe *fileError
	prefix := ""
	if errors.As(err, &fe) {
		prefix, err = fe.path+": ", fe.err
	}
	var l errorList
	if !errors.As(err, &l) {
		if prefix != "" {
			return []error{&fileError{path: fe.path, err: err}}
		}
		return []error{err}
	}
	out := make([]error, len(l))
	for i, e := range l {
		if prefix != "" {
			e = &fileError{path: fe.path, err: e}
		}
		out[i] = e
	}
	return out
}

// fileError names the file an error is in: "config: gw.yaml: line 3: ...".
type fileError struct {
	path string
	err  error
}

func (e *fileError) Error() string {
	return "config: " + e.path + ": " + strings.TrimPrefix(e.err.Error(), "config: ")
}

func (e *fileError) Unwrap() error { return e.err }

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, &fileError{path: path, err: err}
	}
	return f, nil
}

// Parse decodes data strictly and validates every section present. It
// reads no other file: Build does (zone files, certificates).
func Parse(data []byte) (*File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxError(data, err)
	}
	f := new(File)
	if len(root.Content) == 0 {
		return f, nil // an empty file: no section runs
	}
	if err := checkKeys(&root); err != nil {
		return nil, err
	}
	if err := root.Decode(f); err != nil {
		// checkKeys decoded every leaf already; this is a safety net.
		return nil, fmt.Errorf("config: %s", oneLine(strings.TrimPrefix(err.Error(), "yaml: ")))
	}
	f.setRoot(&root)
	if err := f.validate(); err != nil {
		return nil, withLines(err, &root)
	}
	return f, nil
}

// syntaxError turns a YAML syntax error into ours, at the line where the
// document stops parsing. yaml reports the line where the enclosing block
// began (an indentation slip on line 9 of a list that starts on line 3 says
// "line 3"), so the line is found again: the first line from which every
// longer prefix of the document fails to parse. A prefix that ends inside a
// multi-line flow list fails too, but a longer one parses again, so it is not
// taken for the culprit.
func syntaxError(data []byte, err error) error {
	msg := strings.TrimPrefix(oneLine(err.Error()), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				line, msg = v, after
			}
		}
	}
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) <= 2000 { // quadratic; a config file is far smaller
		culprit := 0
		for n := len(lines); n >= 1; n-- {
			var probe yaml.Node
			if yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &probe) == nil {
				break
			}
			culprit = n
		}
		if culprit > 0 {
			line = culprit
		}
	}
	if line > 0 {
		return fmt.Errorf("config: line %d: %s (check the indentation of this line and the lines above it)", line, msg)
	}
	return fmt.Errorf("config: %s", msg)
}

// withLines fills in Line on every *FieldError in err (a single error or a
// list) by walking root along the error's path.
func withLines(err error, root *yaml.Node) error {
	if root == nil || err == nil {
		return err
	}
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
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
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

// Join combines errors from several Build calls into one, on one line, that
// Errors splits again.
func Join(errs ...error) error { return join(errs...) }
