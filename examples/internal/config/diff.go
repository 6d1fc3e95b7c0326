package config

import (
	"reflect"
	"sort"
	"strings"
)

// Changed returns the key paths whose values differ between two
// configurations, as they are spelt in the file: "dns.listen",
// "relay.limits.bandwidth". Lists and maps are compared whole; a section
// present in one and absent in the other is its own key.
func Changed(a, b *File) []string {
	var out []string
	diffValue(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "", &out)
	sort.Strings(out)
	return out
}

// Diff is Changed for two values of one section type (two *DNS, say),
// their paths under path ("dns"): only the keys of the file count, not what
// parsing kept beside them (the document's lines).
func Diff(path string, a, b any) []string {
	var out []string
	diffValue(reflect.ValueOf(a), reflect.ValueOf(b), path, &out)
	sort.Strings(out)
	return out
}

// Restart returns the paths of changed that no entry of live covers: the
// changes a reload does not apply. An entry covers itself and the keys below
// it ("dns.views" covers "dns.views[0].records").
func Restart(changed, live []string) []string {
	var out []string
	for _, p := range changed {
		if !Covered(p, live) {
			out = append(out, p)
		}
	}
	return out
}

// Within keeps the paths that are one of keys or below one of them: a
// binary that serves only some sections reports only their changes.
func Within(paths, keys []string) []string {
	var out []string
	for _, p := range paths {
		if Covered(p, keys) {
			out = append(out, p)
		}
	}
	return out
}

// Covered reports whether path is one of keys or below one of them.
func Covered(path string, keys []string) bool {
	for _, k := range keys {
		if path == k || strings.HasPrefix(path, k+".") || strings.HasPrefix(path, k+"[") {
			return true
		}
	}
	return false
}

func diffValue(a, b reflect.Value, path string, out *[]string) {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, path)
			}
			return
		}
		diffValue(a.Elem(), b.Elem(), path, out)
	case reflect.Struct:
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			p := name
			if path != "" {
				p = path + "." + name
			}
			diffValue(a.Field(i), b.Field(i), p, out)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
	}
}
