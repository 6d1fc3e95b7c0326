package netcore

import (
	"net/netip"
	"sync"
)

// Default network sizes for per-network limits: an IPv4 /24 is what one
// customer or one small hosting range holds, an IPv6 /56 is the usual
// delegation to one home (RFC 6177), so a host cannot escape a per-address
// cap by using more addresses of its own.
const (
	DefaultBits4 = 24
	DefaultBits6 = 56
)

// Verdict is what ConnCounter.Acquire decided.
type Verdict int

const (
	// Allowed: the connection was counted; call Release when it ends.
	Allowed Verdict = iota
	// OverAddr: the source address holds PerAddr connections already.
	OverAddr
	// OverNet: the source's network holds PerNet connections already.
	OverNet
)

// String names the verdict for logs and metrics labels.
func (v Verdict) String() string {
	switch v {
	case Allowed:
		return "allowed"
	case OverAddr:
		return "per-address limit"
	case OverNet:
		return "per-network limit"
	}
	return "unknown"
}

// ConnCounter counts open connections per source address and per source
// network, and refuses a new one beyond either cap. The zero value counts
// without limits. It is safe for concurrent use. Addresses are unmapped, so
// ::ffff:192.0.2.1 and 192.0.2.1 are one source.
type ConnCounter struct {
	// PerAddr caps connections from one address; zero or less: no cap.
	PerAddr int
	// PerNet caps connections from one network (see Bits4, Bits6); zero or
	// less: no cap.
	PerNet int
	// Bits4 and Bits6 are the network sizes for PerNet; zero means
	// DefaultBits4 (24) and DefaultBits6 (56).
	Bits4, Bits6 int

	mu     sync.Mutex
	byAddr map[netip.Addr]int
	byNet  map[netip.Prefix]int
	total  int
}

func (c *ConnCounter) network(a netip.Addr) netip.Prefix {
	b4, b6 := c.Bits4, c.Bits6
	if b4 <= 0 {
		b4 = DefaultBits4
	}
	if b6 <= 0 {
		b6 = DefaultBits6
	}
	return Network(a, b4, b6)
}

// Acquire counts a new connection from a, unless a cap is reached.
func (c *ConnCounter) Acquire(a netip.Addr) Verdict {
	a = a.Unmap().WithZone("")
	n := c.network(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byAddr == nil {
		c.byAddr = make(map[netip.Addr]int)
		c.byNet = make(map[netip.Prefix]int)
	}
	if c.PerAddr > 0 && c.byAddr[a] >= c.PerAddr {
		return OverAddr
	}
	if c.PerNet > 0 && c.byNet[n] >= c.PerNet {
		return OverNet
	}
	c.byAddr[a]++
	c.byNet[n]++
	c.total++
	return Allowed
}

// Release uncounts a connection that Acquire allowed.
func (c *ConnCounter) Release(a netip.Addr) {
	a = a.Unmap().WithZone("")
	n := c.network(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byAddr[a] <= 1 {
		delete(c.byAddr, a)
	} else {
		c.byAddr[a]--
	}
	if c.byNet[n] <= 1 {
		delete(c.byNet, n)
	} else {
		c.byNet[n]--
	}
	if c.total > 0 {
		c.total--
	}
}

// Count returns the connections counted for a and for a's network.
func (c *ConnCounter) Count(a netip.Addr) (addr, network int) {
	a = a.Unmap().WithZone("")
	n := c.network(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byAddr[a], c.byNet[n]
}

// Total returns the connections counted from all sources.
func (c *ConnCounter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
