package netcore

import (
	"errors"
	"net"
	"time"
)

// Backoff bounds for temporary accept failures. They are net/http's: short
// enough that a server recovers within a second once descriptors are free
// again, long enough that an EMFILE storm does not spin a core.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// IsTemporary reports whether an Accept error is worth retrying: EMFILE,
// ENFILE, ECONNABORTED, ECONNRESET, EINTR and timeouts. net.Error's Temporary
// is deprecated for its vague meaning in general, but on accept errors it names
// exactly these (net/http relies on it the same way). A closed listener is
// never temporary.
func IsTemporary(err error) bool {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// AcceptLoop accepts connections from l and hands each one to serve, until stop
// is closed or Accept fails for good. serve runs on the loop's goroutine, so it
// must not block: start a goroutine for the connection's work.
//
// Temporary failures (see IsTemporary) back off from 5 ms, doubling to 1 s,
// without ending the loop; the pause ends early when stop closes. AcceptLoop
// returns nil once stop is closed, whatever Accept returned, and otherwise the
// error that ended it. It does not close l: the caller owns it.
func AcceptLoop(l net.Listener, stop <-chan struct{}, serve func(net.Conn)) error {
	var delay time.Duration
	var timer *time.Timer
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-stop:
				return nil
			default:
			}
			if !IsTemporary(err) {
				return err
			}
			delay = min(max(2*delay, minBackoff), maxBackoff)
			if timer == nil {
				timer = time.NewTimer(delay)
			} else {
				timer.Reset(delay)
			}
			select {
			case <-timer.C:
			case <-stop:
				timer.Stop()
				return nil
			}
			continue
		}
		delay = 0
		select {
		case <-stop:
			c.Close()
			return nil
		default:
		}
		serve(c)
	}
}

// IsClosed reports whether err says the socket was closed (by Close or
// Shutdown), which ends a read loop; any other read error on a packet socket
// (ICMP-induced ECONNREFUSED, ENOBUFS, EMFILE on a receive of ancillary data)
// is a reason to count and go on, not to stop serving.
func IsClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
