package netcore

import "strings"

// Join is errors.Join on one line: it returns nil when every error is nil,
// the error itself when only one is not, and otherwise an error whose text
// is the texts joined by "; " (errors.Join's newlines would split a log line
// or an exit message). errors.Is and errors.As see every error.
func Join(errs ...error) error {
	var kept []error
	for _, e := range errs {
		if e != nil {
			kept = append(kept, e)
		}
	}
	switch len(kept) {
	case 0:
		return nil
	case 1:
		return kept[0]
	}
	return joined(kept)
}

type joined []error

func (j joined) Error() string {
	var b strings.Builder
	for i, e := range j {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(strings.ReplaceAll(e.Error(), "\n", "; "))
	}
	return b.String()
}

func (j joined) Unwrap() []error { return j }
