package dnssplit

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// ServePacket answers queries arriving on pc until Shutdown or Close. It
// reads and writes datagrams in batches (recvmmsg/sendmmsg on Linux),
// replies from the address each query arrived on, and lets at most Workers
// queries wait on upstreams at once. Read errors other than a closed socket
// (EMFILE, say) pause reading with a growing back-off (up to 1 s) instead of
// ending ServePacket. It may be called for several sockets the caller bound
// to one address with SO_REUSEPORT, one reader each. It closes pc when it
// returns, and returns ErrServerClosed after Shutdown or Close.
func (s *Server) ServePacket(pc net.PacketConn) error {
	s.init()
	if !s.track(nil, pc, nil) {
		pc.Close()
		return ErrServerClosed
	}
	defer s.wg.Done()
	defer s.untrack(nil, pc, nil)
	defer pc.Close()
	return s.servePackets(newPacketIO(pc), pc)
}

// servePackets runs one reader (batches of datagrams), Workers handlers and
// one writer (batches of replies). The reader blocks when every worker is
// busy and the queue is full, so a flood waits (and is dropped) in the
// kernel's socket buffer rather than in goroutines.
func (s *Server) servePackets(pio packetIO, pc net.PacketConn) error {
	workers := s.workers()
	pool := sync.Pool{New: func() any { return &packet{buf: make([]byte, maxUDPRead)} }}
	jobs := make(chan *packet, workers)
	replies := make(chan *packet, workers)
	var wg, wwg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				p.out, _ = s.handlePass(s.bgCtx, p.buf[:p.n], p.src, p.local, false, pass{charged: p.charged})
				if p.out == nil {
					pool.Put(p)
					continue
				}
				replies <- p
			}
		}()
	}
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		batch := make([]*packet, 0, batchSize)
		for p := range replies {
			batch = append(batch[:0], p)
		more:
			for len(batch) < batchSize {
				select {
				case p, ok := <-replies:
					if !ok {
						break more
					}
					batch = append(batch, p)
				default:
					break more
				}
			}
			if err := pio.writeBatch(batch); err != nil {
				s.logger().Debug("dnssplit: udp write", "err", err)
			}
			for _, p := range batch {
				p.out = nil
				pool.Put(p)
			}
		}
	}()
	err := s.readPackets(pio, &pool, jobs)
	close(jobs)
	wg.Wait()
	close(replies)
	wwg.Wait()
	if s.isClosed() {
		return ErrServerClosed
	}
	return err
}

// udpMinBackoff and udpMaxBackoff bound the pause after a failed read: short
// enough that one ICMP error costs nothing noticeable, long enough at the top
// that a process out of descriptors does not spin a core.
const (
	udpMinBackoff = time.Millisecond
	udpMaxBackoff = time.Second
)

func (s *Server) readPackets(pio packetIO, pool *sync.Pool, jobs chan<- *packet) error {
	batch := make([]*packet, batchSize)
	for i := range batch {
		batch[i] = pool.Get().(*packet)
	}
	defer func() {
		for _, p := range batch {
			pool.Put(p)
		}
	}()
	// Queries answerable without the network (local data, fresh cache) are
	// answered right here and their replies sent in one batch; only those
	// that must wait for an upstream go to the workers.
	out := make([]*packet, 0, batchSize)
	var backoff time.Duration
	for {
		n, err := pio.readBatch(batch)
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if netcore.IsClosed(err) {
				return fmt.Errorf("dnssplit: udp read: %w", err)
			}
			// Anything else (EMFILE, ENOBUFS, an ICMP error reported on
			// the socket) must not stop the server, nor spin on a
			// condition that persists: pause, longer each time in a row.
			s.logger().Debug("dnssplit: udp read", "err", err)
			backoff = min(max(2*backoff, udpMinBackoff), udpMaxBackoff)
			select {
			case <-s.done:
				return ErrServerClosed
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		for i := range n {
			p := batch[i]
			var oc outcome
			p.out, oc = s.handlePass(s.bgCtx, p.buf[:p.n], p.src, p.local, false, pass{inline: true, reply: p.buf[:0]})
			switch {
			case oc.needsUpstream:
				p.out, p.charged = nil, oc.charged
				jobs <- p
			case p.out != nil:
				out = append(out, p)
			default:
				continue // dropped: keep the buffer
			}
			batch[i] = pool.Get().(*packet)
		}
		if len(out) > 0 {
			if err := pio.writeBatch(out); err != nil {
				s.logger().Debug("dnssplit: udp write", "err", err)
			}
			for i, p := range out {
				p.out = nil
				pool.Put(p)
				out[i] = nil
			}
			out = out[:0]
		}
	}
}
