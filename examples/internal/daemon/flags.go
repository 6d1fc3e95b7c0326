// Package daemon is what every example binary does the same way: the flags
// they share (-config, -shutdown-timeout, -check, -h) and the signals they
// act on (SIGINT and SIGTERM shut down gracefully within -shutdown-timeout,
// SIGHUP reloads the configuration file), with the same log lines.
//
// Typical usage:
//
//	cmd := daemon.New("splitdns", "splitdns: split-horizon DNS from ...", "splitdns -config FILE [-public IP]", stdout, stderr)
//	public := cmd.Flags.String("public", "", "...")
//	if code, ok := cmd.Parse(args); !ok {
//		return code
//	}
//	sig := daemon.Notify()
//	defer sig.Stop()
//	... start serving ...
//	return sig.Serve(daemon.Service{Name: "splitdns", Log: log, Timeout: cmd.ShutdownTimeout, Reload: reload, Shutdown: shutdown})
package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hairpin-go/hairpin/examples/internal/config"
)

// DefaultShutdownTimeout is -shutdown-timeout's default: long enough for
// clients in the middle of a request to finish, shorter than systemd's
// default stop timeout (90 s) and Kubernetes' grace period (30 s), so the
// process ends by itself before it is killed.
const DefaultShutdownTimeout = 10 * time.Second

// Command is a binary's command line: the common flags, parsed into its
// fields, and the binary's own, defined on Flags before Parse.
type Command struct {
	// Flags is the flag set; add the binary's own flags to it before Parse.
	Flags *flag.FlagSet

	// Config is -config: the configuration file.
	Config string
	// ShutdownTimeout is -shutdown-timeout: how long a graceful shutdown
	// may take before what is still open is closed.
	ShutdownTimeout time.Duration
	// Check is -check: do everything a start does short of serving, then
	// exit.
	Check bool

	// Args allows positional arguments (natcheck's servers); without it
	// they are a usage error.
	Args bool

	name, description, usage string
	stdout, stderr           io.Writer
}

// New returns the command line of the binary name with the common flags
// defined. description is the one line -h prints first; usage is the
// synopsis printed after it.
func New(name, description, usage string, stdout, stderr io.Writer) *Command {
	c := &Command{name: name, description: description, usage: usage, stdout: stdout, stderr: stderr}
	c.Flags = flag.NewFlagSet(name, flag.ContinueOnError)
	c.Flags.SetOutput(stderr)
	c.Flags.StringVar(&c.Config, "config", "", "configuration `file` (YAML)")
	c.Flags.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout,
		"how long a graceful shutdown (SIGINT, SIGTERM) may take before open connections are closed")
	c.Flags.BoolVar(&c.Check, "check", false, "do everything a start does short of serving (parse, load files), then exit")
	c.Flags.Usage = func() { c.printUsage(c.Flags.Output()) }
	return c
}

func (c *Command) printUsage(w io.Writer) {
	fmt.Fprintln(w, c.description)
	fmt.Fprintln(w, "\nUsage: "+c.usage)
	c.Flags.SetOutput(w)
	c.Flags.PrintDefaults()
	c.Flags.SetOutput(c.stderr)
}

// Parse parses args. It returns ok false when the binary should exit with
// code at once: 0 after -h (the description, usage and flags on stdout), 2
// after a usage error (the reason on stderr).
func (c *Command) Parse(args []string) (code int, ok bool) {
	if err := c.Flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage(c.stdout)
			return 0, false
		}
		return 2, false // the flag package printed the error and the usage
	}
	if c.Flags.NArg() > 0 && !c.Args {
		return c.Usagef("unexpected arguments: %s", strings.Join(c.Flags.Args(), " ")), false
	}
	if c.ShutdownTimeout <= 0 {
		return c.Usagef("-shutdown-timeout must be positive, got %s", c.ShutdownTimeout), false
	}
	return 0, true
}

// Usagef prints "name: message" and the usage line on stderr and returns
// exit code 2, for usage errors found after Parse.
func (c *Command) Usagef(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "%s: %s\n", c.name, fmt.Sprintf(format, args...))
	fmt.Fprintln(c.stderr, "Usage: "+c.usage+" (-h for the flags)")
	return 2
}

// Fail prints "name: err" on stderr, one line per configuration error
// (each names its key and line), and returns exit code 1, for errors that
// stop the start.
func (c *Command) Fail(err error) int {
	for _, e := range config.Errors(err) {
		fmt.Fprintf(c.stderr, "%s: %v\n", c.name, e)
	}
	return 1
}
