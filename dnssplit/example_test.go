package dnssplit_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/hairpin-go/hairpin/dnssplit"
	"github.com/miekg/dns"
)

// A LAN client and an internet client ask for the same name and get
// different addresses.
func Example() {
	inside, outside := new(dnssplit.Records), new(dnssplit.Records)
	inside.AddString("blog.example.com. 300 IN A 192.168.1.20")
	outside.AddString("blog.example.com. 300 IN A 203.0.113.1")
	srv := &dnssplit.Server{
		Views: []*dnssplit.View{
			{Name: "inside", Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Records: inside},
			{Name: "outside", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Records: outside},
		},
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServePacket(pc) }()

	m := new(dns.Msg)
	m.SetQuestion("blog.example.com.", dns.TypeA)
	r, _, err := new(dns.Client).Exchange(m, pc.LocalAddr().String())
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Answer[0].(*dns.A).A)
	fmt.Println(srv.Explain(netip.MustParseAddr("198.51.100.7"), netip.Addr{}))

	srv.Shutdown(context.Background())
	fmt.Println(<-done)
	// Output:
	// 192.168.1.20
	// view "outside" (#1): source 198.51.100.7 is in 0.0.0.0/0
	// dnssplit: server closed
}

// A public address learned at run time replaces the outside record.
func ExampleRecords_Set() {
	outside := new(dnssplit.Records)
	outside.AddString("blog.example.com. 60 IN A 203.0.113.1")
	rr, _ := dnssplit.ParseRecord("blog.example.com. 60 IN A 198.51.100.44")
	outside.Set("blog.example.com.", dns.TypeA, rr)
	fmt.Println(outside.Lookup("blog.example.com.", dns.TypeA).Answer[0])
	// Output:
	// blog.example.com.	60	IN	A	198.51.100.44
}
