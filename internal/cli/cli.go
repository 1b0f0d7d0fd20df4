// Package cli is cyberdrew's command line: the cobra command tree, its typed
// exit codes, the serve configuration loading (defaults, then environment,
// then flags) and the choice of log handler. Data goes to stdout, chatter
// and logs to stderr.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// ExitCode is the process exit status of a command.
type ExitCode int

// Exit codes, listed in the root command's help.
const (
	ExitOK           ExitCode = 0 // success
	ExitError        ExitCode = 1 // the command failed
	ExitUsage        ExitCode = 2 // unknown command or flag, wrong arguments
	ExitConfig       ExitCode = 3 // invalid configuration: nothing was started
	ExitUnavailable  ExitCode = 4 // the store (or the daemon) cannot be reached
	ExitUnauthorized ExitCode = 5 // the daemon refused the event key or the signing key
	ExitRejected     ExitCode = 6 // the daemon refused the request: invalid event, unknown id, finished run
	ExitRunFailed    ExitCode = 7 // a run waited for failed or was cancelled
	ExitTimeout      ExitCode = 8 // the wait for runs timed out
)

const exitCodesHelp = `Exit codes:
  0  success
  1  the command failed
  2  usage: unknown command or flag, wrong arguments (a client command's bad
     flag or environment value too)
  3  invalid configuration of serve (flags or environment): nothing was started
  4  unavailable: the store or the daemon cannot be reached (serve: another
     daemon holds the SQLite file, or another process the listen address)
  5  unauthorized: the daemon refused the event key or the signing key
  6  rejected: the daemon refused the request (invalid event, unknown id, finished run)
  7  a run failed or was cancelled (--wait, refresh, summary)
  8  timed out waiting for runs (--timeout)`

// ServeFunc runs the daemon until ctx ends (SIGINT or SIGTERM), then shuts
// it down within cfg.ShutdownTimeout. It returns nil after a clean shutdown.
type ServeFunc func(ctx context.Context, cfg config.Serve, logger *slog.Logger) error

// Options are the parts the command tree is built from.
type Options struct {
	// Serve runs the daemon.
	Serve ServeFunc
	// Build describes this binary; empty fields are read from the Go build
	// information.
	Build Build
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
}

// Main runs the command line of this process and returns its exit code.
func Main(opts Options) int {
	return int(Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, opts))
}

// Run executes one command line in-process: args without the program name,
// data to stdout, messages to stderr. With -o json, a command that fails
// before it printed its answer also prints {"error","exit_code"} to stdout.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, opts Options) ExitCode {
	root := NewRoot(opts)
	out := &countingWriter{w: stdout}
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(stderr)
	// cobra adds its completion command when it executes, writing to the
	// output set by then; add it now, so that it is a group like the
	// others (`completion tcsh` exits 2).
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil && c != root {
		refuseMissingSubcommand(c)
	}
	// Errors raised before a command's own code starts (unknown command or
	// flag, wrong arguments) are usage errors.
	started := false
	root.PersistentPreRun = func(*cobra.Command, []string) { started = true }

	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code, msg, usage := failure(err, started)
	fmt.Fprintf(stderr, "cyberdrew: %s\n", msg)
	if usage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	if o := cmd.Flags().Lookup("output"); o != nil && o.Value.String() == outputJSON && out.n == 0 {
		_ = writeJSON(stdout, jsonError{Error: msg, ExitCode: code})
	}
	return code
}

// jsonError is the answer of a command that failed, with -o json.
type jsonError struct {
	Error    string   `json:"error"`
	ExitCode ExitCode `json:"exit_code"`
}

// failure maps a command's error to its exit code and message; usage says
// whether to point at --help.
func failure(err error, started bool) (code ExitCode, msg string, usage bool) {
	var (
		cerr *configError
		xerr *exitError
	)
	if code, msg, ok := clientFailure(err); ok {
		return code, msg, false
	}
	switch {
	case errors.As(err, &xerr):
		return xerr.code, err.Error(), xerr.code == ExitUsage
	case !started:
		return ExitUsage, err.Error(), true
	case errors.As(err, &cerr), errors.Is(err, store.ErrMisconfigured):
		return ExitConfig, err.Error(), false
	case errors.Is(err, store.ErrUnavailable):
		return ExitUnavailable, err.Error(), false
	default:
		return ExitError, err.Error(), false
	}
}

// countingWriter counts what a command wrote to stdout.
type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// Unwrap is the writer c counts for.
func (c *countingWriter) Unwrap() io.Writer { return c.w }

// unwrap is the writer under w when w wraps one (countingWriter): the
// terminal itself, for the dash, which needs its file to size the screen
// and switch it to raw mode.
func unwrap(w io.Writer) io.Writer {
	if u, ok := w.(interface{ Unwrap() io.Writer }); ok {
		return u.Unwrap()
	}
	return w
}

// NewRoot builds the command tree.
func NewRoot(opts Options) *cobra.Command {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	root := &cobra.Command{
		Use:   "cyberdrew",
		Short: "Self-hosted durable background jobs, Inngest-compatible, in one binary",
		Long: `cyberdrew takes events over HTTP (the Inngest event API), runs durable
functions with memoized, retried steps, fires cron schedules, and lets you
watch and steer all of it.

` + exitCodesHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.AddGroup(
		&cobra.Group{ID: groupClient, Title: "Talk to a running daemon:"},
		&cobra.Group{ID: groupDaemon, Title: "Run and inspect this binary:"},
	)
	root.SetHelpCommandGroupID(groupDaemon)
	root.SetCompletionCommandGroupID(groupDaemon)
	serve, version := newServeCmd(opts), newVersionCmd(opts.Build)
	serve.GroupID, version.GroupID = groupDaemon, groupDaemon
	root.AddCommand(serve, version,
		newSendCmd(opts), newRefreshCmd(opts), newSummaryCmd(opts),
		newRunsCmd(opts), newEventsCmd(opts), newFunctionsCmd(opts), newDashCmd(opts), newEmailCmd(opts))
	for _, c := range root.Commands() {
		refuseMissingSubcommand(c)
	}
	return root
}

// refuseMissingSubcommand makes a command group (runs, events, …) and its
// own groups exit 2 when their subcommand is mistyped or missing, as the
// root does for a command: cobra runs a group without a RunE as help,
// exit 0, so `cyberdrew runs lst` in a script passed for a success.
func refuseMissingSubcommand(cmd *cobra.Command) {
	if !cmd.HasSubCommands() {
		return
	}
	for _, c := range cmd.Commands() {
		refuseMissingSubcommand(c)
	}
	if cmd.Runnable() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2 // cobra's own, which only the root gets
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var names []string
		for _, c := range cmd.Commands() {
			if c.IsAvailableCommand() {
				names = append(names, c.Name())
			}
		}
		if len(args) == 0 {
			return usageErrorf("%s needs a command: %s (see %s --help)", cmd.CommandPath(), strings.Join(names, ", "), cmd.CommandPath())
		}
		hint := ""
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usageErrorf("unknown command %q for %q%s (want %s)", args[0], cmd.CommandPath(), hint, strings.Join(names, ", "))
	}
}

// Command groups of the root's help.
const (
	groupClient = "client"
	groupDaemon = "daemon"
)

// configError is a configuration that cannot start: every problem found.
type configError struct {
	problems []error
}

func (e *configError) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}
