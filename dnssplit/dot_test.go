package dnssplit

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkDoTCacheMiss is the cost of one forwarded query over DNS over TLS
// to a loopback upstream: every name is new, so each goes upstream. Run with
// -cpu 1 and taskset; ns/op is the cache-miss latency.
func BenchmarkDoTCacheMiss(b *testing.B) {
	up, cfg := tlsUpstream(b, answerA("198.51.100.53", 60))
	f := newForwarder([]Upstream{{Addr: up, TLS: true, ServerName: "dot.test", TLSConfig: cfg}}, PolicyFailover, 5*time.Second, time.Second, nil)
	b.Cleanup(f.close)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r, err := f.exchange(b.Context(), dns.Question{Name: fmt.Sprintf("n%d.example.net.", i), Qtype: dns.TypeA, Qclass: dns.ClassINET}, false, false)
		if err != nil || firstA(r) != "198.51.100.53" {
			b.Fatalf("%v %v", r, err)
		}
	}
}
