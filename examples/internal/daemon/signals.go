package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Signals catches SIGINT, SIGTERM and SIGHUP from Notify on. Call Notify
// before starting to serve: a SIGTERM during the start ends Context (a start
// that waits on the network gives up), and a SIGHUP waits for Serve instead
// of ending the process, which is its default action.
type Signals struct {
	ctx  context.Context
	stop context.CancelFunc
	hup  chan os.Signal
}

// Notify starts catching the signals.
func Notify() *Signals {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return &Signals{ctx: ctx, stop: stop, hup: hup}
}

// Context is done at the first SIGINT or SIGTERM.
func (s *Signals) Context() context.Context { return s.ctx }

// Stop stops catching the signals.
func (s *Signals) Stop() {
	s.stop()
	signal.Stop(s.hup)
}

// Service is what Serve runs between the start and the exit.
type Service struct {
	// Name starts the "NAME ready" line (logged when Serve begins: the
	// signals are caught by then, so a test or an init system may send
	// SIGHUP once it has seen the line).
	Name string
	Log  *slog.Logger
	// Timeout bounds Shutdown (-shutdown-timeout).
	Timeout time.Duration

	// Reload optionally re-reads the configuration and applies it: what can
	// change while serving changes, and restart names by key path
	// ("dns.listen") the changes that wait for the next start. On an error
	// nothing may have changed: the running configuration stays. If nil,
	// SIGHUP is logged and ignored.
	Reload func() (restart []string, err error)

	// Shutdown stops serving gracefully: connections in progress may finish
	// until ctx is done, then what is left is closed and ctx's error
	// returned.
	Shutdown func(ctx context.Context) error

	// Failed optionally delivers the error of a part that stopped serving:
	// Serve then shuts down and returns 1, so that systemd
	// (Restart=on-failure) or Kubernetes start the process again instead of
	// leaving it half up.
	Failed <-chan error
}

// Serve logs "NAME ready" and then acts on signals until SIGINT or SIGTERM
// (or a failure): SIGHUP calls Reload and logs its outcome, SIGINT and
// SIGTERM call Shutdown bounded by Timeout. It returns the exit code: 0
// after a shutdown (also one that had to close connections at the
// deadline), 1 after a failure or a shutdown error.
func (s *Signals) Serve(svc Service) int {
	log := svc.Log
	log.Info(svc.Name + " ready")
	for {
		select {
		case <-s.hup:
			s.reload(svc)
		case err := <-svc.Failed:
			log.Error("a part stopped serving; shutting down", "err", err)
			if serr := shutdown(svc); serr != nil {
				log.Error("shutdown", "err", serr)
			}
			return 1
		case <-s.ctx.Done():
			log.Info("shutting down", "deadline", svc.Timeout.String())
			if err := shutdown(svc); err != nil {
				log.Error("shutdown", "err", err)
				return 1
			}
			log.Info(svc.Name + " stopped")
			return 0
		}
	}
}

func (s *Signals) reload(svc Service) {
	log := svc.Log
	if svc.Reload == nil {
		log.Warn("SIGHUP: " + svc.Name + " does not reload; restart it to apply a new configuration")
		return
	}
	restart, err := svc.Reload()
	switch {
	case err != nil:
		log.Error("reload rejected; still serving the previous configuration", "err", err)
	case len(restart) > 0:
		log.Warn("configuration reloaded; these keys changed but take effect at the next restart", "restart", restart)
	default:
		log.Info("configuration reloaded")
	}
}

// shutdown runs svc.Shutdown within svc.Timeout. A deadline that cut
// connections short is what -shutdown-timeout asks for, not an error.
func shutdown(svc Service) error {
	ctx, cancel := context.WithTimeout(context.Background(), svc.Timeout)
	defer cancel()
	err := svc.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		svc.Log.Warn("shutdown reached -shutdown-timeout; closed the connections still open", "timeout", svc.Timeout.String())
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
