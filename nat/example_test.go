package nat_test

import (
	"context"
	"fmt"
	"net"

	"github.com/hairpin-go/hairpin/nat"
)

// A plain STUN server on loopback and a probe against it. Loopback has no
// NAT, and one address cannot run the filtering tests, so filtering (and
// with it the classic label) stays unknown rather than guessed.
func Example() {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := &nat.Server{}
	go s.ServePacket(pc)
	defer s.Close()

	c := &nat.Client{Servers: []string{pc.LocalAddr().String()}}
	rep, err := c.Probe(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println("udp:", rep.UDP)
	fmt.Println("behind NAT:", rep.BehindNAT)
	fmt.Println("filtering:", rep.Filtering)
	fmt.Println("server:", rep.Server.RFC5780)
	fmt.Println("classic:", rep.Classic)
	// Output:
	// udp: true
	// behind NAT: no
	// filtering: unknown
	// server: not-supported
	// classic: unknown
}

func ExampleClassic() {
	fmt.Println(nat.Classic(nat.Yes, nat.EndpointIndependent, nat.AddressAndPortDependent))
	fmt.Println(nat.Classic(nat.Yes, nat.AddressAndPortDependent, nat.AddressAndPortDependent))
	fmt.Println(nat.Classic(nat.No, nat.EndpointIndependent, nat.EndpointIndependent))
	fmt.Println(nat.Classic(nat.No, nat.EndpointIndependent, nat.AddressAndPortDependent))
	// Output:
	// port-restricted cone
	// symmetric
	// open
	// symmetric UDP firewall
}
