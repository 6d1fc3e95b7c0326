package netcore

import (
	"errors"
	"io"
	"os"
	"testing"
)

func TestJoin(t *testing.T) {
	a, b := errors.New("a: first"), errors.New("b: second")
	for _, c := range []struct {
		name string
		in   []error
		want string // "" means nil
	}{
		{"none", nil, ""},
		{"all nil", []error{nil, nil}, ""},
		{"one", []error{nil, a}, "a: first"},
		{"two", []error{a, nil, b}, "a: first; b: second"},
		{"a multi-line one is folded", []error{a, errors.Join(b, io.EOF)}, "a: first; b: second; EOF"},
	} {
		got := Join(c.in...)
		if c.want == "" {
			if got != nil {
				t.Errorf("%s: %v, want nil", c.name, got)
			}
			continue
		}
		if got == nil || got.Error() != c.want {
			t.Errorf("%s: %v, want %q", c.name, got, c.want)
		}
	}
	err := Join(a, &os.PathError{Op: "open", Path: "x", Err: os.ErrNotExist})
	var pe *os.PathError
	if !errors.Is(err, a) || !errors.Is(err, os.ErrNotExist) || !errors.As(err, &pe) {
		t.Errorf("errors.Is/As do not see the joined errors of %v", err)
	}
	if Join(a) != a {
		t.Error("one error is not returned as is")
	}
}
