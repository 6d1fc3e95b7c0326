package nat

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func TestEpochValid(t *testing.T) {
	for _, c := range []struct {
		name        string
		prev, epoch uint32
		after       time.Duration
		want        bool
	}{
		{"same second", 100, 100, 0, true},
		{"in step", 100, 160, 60 * time.Second, true},
		{"one second back (rounding)", 100, 99, 0, true},
		{"two seconds back: restarted", 100, 98, 0, false},
		{"restarted long ago, now small", 5000, 3, 30 * time.Second, false},
		{"router clock stood still", 100, 100, 60 * time.Second, false},
		{"router runs fast", 100, 400, 60 * time.Second, false},
		{"within 1/16 slow", 1000, 1000 + 1600 - 100, 1600 * time.Second, true},
		{"within 1/16 fast", 1000, 1000 + 1700, 1600 * time.Second, true},
		{"two seconds of slack", 100, 103, time.Second, true},
		{"beyond the slack", 100, 104, time.Second, false},
	} {
		if got := epochValid(c.prev, c.epoch, c.after); got != c.want {
			t.Errorf("%s: epochValid(%d, %d, %v) = %v, want %v", c.name, c.prev, c.epoch, c.after, got, c.want)
		}
	}
}

// TestPortMapperEpochReset: a router that restarts loses every mapping. The
// first reply after the restart carries a small epoch; the mapper then
// renews every other mapping at once, although their renewals are half an
// hour away (RFC 6887 §8.5, RFC 6886 §3.6).
func TestPortMapperEpochReset(t *testing.T) {
	for _, p := range []PortMapProtocol{PortMapPCP, PortMapNATPMP} {
		t.Run(p.String(), func(t *testing.T) {
			var epoch atomic.Uint32
			epoch.Store(100000)
			pcp := pcpServer(3600, 0)
			r := newFakeRouter(t, func(req []byte) []byte {
				if req[0] == natpmpVersion {
					resp := natpmpResponse{opcode: req[1], epoch: epoch.Load()}
					if req[1] == natpmpOpExternal {
						resp.external = netip.MustParseAddr("192.0.2.99")
					} else {
						resp.internalPort = binary.BigEndian.Uint16(req[4:6])
						resp.externalPort = resp.internalPort + 1000
						resp.lifetime = 3600
					}
					return resp.marshal()
				}
				b := pcp(req)
				binary.BigEndian.PutUint32(b[8:12], epoch.Load())
				return b
			})
			m := r.mapper(t, p)
			defer m.Close()
			for _, port := range []uint16{7001, 7002} {
				if _, err := m.Map(t.Context(), TransportUDP, port, 0, time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			drain(r)
			epoch.Store(2) // restarted
			if _, err := m.Map(t.Context(), TransportUDP, 7003, 0, time.Hour); err != nil {
				t.Fatal(err)
			}
			renewed := map[uint16]bool{}
			deadline := time.After(10 * time.Second)
			for !renewed[7001] || !renewed[7002] {
				select {
				case req := <-r.reqs:
					if port, ok := mapRequestPort(req); ok {
						renewed[port] = true
					}
				case <-deadline:
					t.Fatalf("after the router's restart, renewed only %v; want 7001 and 7002 at once", renewed)
				}
			}
			m.mu.Lock()
			resets := m.epochResets
			m.mu.Unlock()
			if resets != 1 {
				t.Errorf("epoch resets %d, want 1", resets)
			}
		})
	}
}

// drain empties r's request log.
func drain(r *fakeRouter) {
	for {
		select {
		case <-r.reqs:
		default:
			return
		}
	}
}

// mapRequestPort returns the internal port of a PCP MAP or NAT-PMP mapping
// request.
func mapRequestPort(req []byte) (uint16, bool) {
	switch {
	case len(req) >= pcpHeaderLen+pcpMapLen && req[0] == pcpVersion && req[1] == pcpOpMap:
		return binary.BigEndian.Uint16(req[pcpHeaderLen+16:]), true
	case len(req) >= 12 && req[0] == natpmpVersion && (req[1] == natpmpOpMapUDP || req[1] == natpmpOpMapTCP):
		return binary.BigEndian.Uint16(req[4:6]), true
	}
	return 0, false
}
