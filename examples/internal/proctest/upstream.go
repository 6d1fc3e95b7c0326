package proctest

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// FakeUpstream runs a DNS server on a loopback UDP port that answers every
// question with an A record 192.0.2.99 (RA set), until the test ends, and
// returns its address: the upstream for forwarding tests.
func FakeUpstream(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.99")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	})}
	ready := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(ready) }
	go func() { _ = srv.ActivateAndServe() }()
	<-ready
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}
