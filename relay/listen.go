package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"

	"github.com/libp2p/go-reuseport"

	"github.com/hairpin-go/hairpin/internal/netcore"
)

// maxReaders caps the UDP sockets ListenAndServe opens on one port: beyond
// the core count extra readers only add contention.
const maxReaders = 8

// listenerBuffer is the socket buffer asked for on the client-facing UDP
// sockets: bursts from many clients at once must not overflow the kernel's
// 208 KiB default before the reader catches up (the kernel caps it at
// net.core.rmem_max).
const listenerBuffer = 4 << 20

// ListenAndServe listens on addr (host:port) for UDP and TCP and serves
// until Close or Shutdown. UDP gets one SO_REUSEPORT socket per core, each
// with its own reader; on Linux the kernel keeps every client IP address on
// one socket (all of a client host's allocations in one engine). It always
// returns a non-nil error: ErrServerClosed after Close or Shutdown.
func (s *Server) ListenAndServe(addr string) error {
	return s.listenAndServe(addr, nil)
}

// ListenAndServeTLS is ListenAndServe with TLS on TCP, using TLSConfig or,
// when certFile is not empty, the certificate and key in those files.
func (s *Server) ListenAndServeTLS(addr, certFile, keyFile string) error {
	cfg := s.TLSConfig
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("relay: load TLS key pair: %w", err)
		}
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		} else {
			cfg = cfg.Clone()
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if cfg == nil {
		return errors.New("relay: ListenAndServeTLS needs TLSConfig or a certificate")
	}
	return s.listenAndServe(addr, cfg)
}

func (s *Server) listenAndServe(addr string, tlsCfg *tls.Config) error {
	if s.isClosed() {
		return ErrServerClosed
	}
	var pcs []net.PacketConn
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	n := min(runtime.GOMAXPROCS(0), maxReaders)
	if tlsCfg != nil {
		n = 0 // TLS is TCP only
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("relay: listen %q: %w", addr, err)
	}
	for i := 0; i < n; i++ {
		var pc net.PacketConn
		if i == 0 {
			pc, err = listenUDPExclusive(addr)
		} else {
			pc, err = reuseport.ListenPacket("udp", addr)
		}
		if err != nil {
			closeAll()
			return fmt.Errorf("relay: %w", err)
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			_ = uc.SetReadBuffer(listenerBuffer)
			_ = uc.SetWriteBuffer(listenerBuffer)
		}
		if i == 0 {
			// A ":0" address picks a port once; the other readers join it.
			addr = net.JoinHostPort(host, strconv.Itoa(int(netcore.AddrPort(pc.LocalAddr()).Port())))
		}
		pcs = append(pcs, pc)
	}
	if len(pcs) > 1 {
		if err := steerBySource(pcs[0], len(pcs)); err != nil {
			// Without steering, only a client that spreads one host's
			// allocations over several local ports (EVEN-PORT with
			// RESERVATION-TOKEN) can land on two engines; serve with one
			// reader rather than answer that client wrongly.
			s.logger().Warn("relay: one UDP reader only", "err", err)
			for _, pc := range pcs[1:] {
				pc.Close()
			}
			pcs = pcs[:1]
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		closeAll()
		return fmt.Errorf("relay: %w", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(pcs)+1)
	for i, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.ServePacket(pc)
		}()
	}
	if tlsCfg != nil {
		errs[len(pcs)] = s.serveListener(tls.NewListener(ln, tlsCfg), "tls")
	} else {
		errs[len(pcs)] = s.Serve(ln)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrServerClosed) {
			return err
		}
	}
	return ErrServerClosed
}
