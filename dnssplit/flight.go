package dnssplit

import (
	"sync"

	"github.com/miekg/dns"
)

// flight merges identical upstream questions in progress: a burst of
// clients asking for the same uncached name costs one upstream query, not
// one per client (a cache stampede, or a flood aimed at the upstream).
type flight struct {
	mu    sync.Mutex
	calls map[cacheKey]*flightCall
}

type flightCall struct {
	done chan struct{}
	msg  *dns.Msg
	err  error
}

// do runs fn once for all concurrent callers with the same key. The returned
// message is shared: callers must not modify it.
func (f *flight) do(k cacheKey, fn func() (*dns.Msg, error)) (*dns.Msg, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = make(map[cacheKey]*flightCall)
	}
	if c, ok := f.calls[k]; ok {
		f.mu.Unlock()
		<-c.done
		return c.msg, c.err
	}
	c := &flightCall{done: make(chan struct{})}
	f.calls[k] = c
	f.mu.Unlock()
	c.msg, c.err = fn()
	f.mu.Lock()
	delete(f.calls, k)
	f.mu.Unlock()
	close(c.done)
	return c.msg, c.err
}
