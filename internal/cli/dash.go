package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/lucasb-eyer/go-colorful"
	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/tui"
)

func newDashCmd(opts Options) *cobra.Command {
	f := newClientFlags(opts)
	var logFile string
	cmd := &cobra.Command{
		Use:   "dash",
		Short: "Live view of the daemon's functions, runs, steps and events",
		Long: `Show a live dashboard of a running daemon in the terminal: its store, workers,
queue, start lag and runs/s; its functions; the latest runs (filter with /,
status keys 0-7, open one with enter for its steps, payload and output); the
latest events with the runs they triggered. R reruns a run, C cancels it,
I invokes a function, E sends one of the site's test events: each asks first.
Press ? for every key, q to quit.

The dash follows the daemon's change stream (GET /v1/stream) and reads
GET /v1/stats and /v1/functions once a second; when the stream breaks it says
so, polls once a second and reconnects by itself. With several daemons on one
Redis, the stats (runs/s, lag, workers) are those of the daemon it talks to;
the queue depth is the shared queue's.

Colours follow TERM and COLORTERM, the background COLORFGBG; without it the
dash asks the terminal (dark until it answers). NO_COLOR turns colours off.
The dash waits for no answer from the terminal and needs one that moves its
cursor (not TERM=dumb). It writes no log on the
screen: --log-file keeps its log.`,
		Example: `  cyberdrew dash
  cyberdrew dash --server http://10.0.0.5:8288 --log-file /tmp/dash.log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			return runDash(cmd.Context(), c, dashOptions{
				getenv: opts.Getenv, logFile: logFile, out: unwrap(cmd.OutOrStdout()), in: cmd.InOrStdin(),
			})
		},
	}
	f.registerConnection(cmd.Flags())
	cmd.Flags().StringVar(&logFile, "log-file", "", "append the dash's own log to this file (default: no log)")
	return clientCommand(cmd)
}

type dashOptions struct {
	getenv  func(string) string
	logFile string
	in      io.Reader
	out     io.Writer
}

func runDash(ctx context.Context, c *client.Client, o dashOptions) error {
	if !isTerminal(o.out) || !isTerminal(o.in) {
		return usageErrorf("dash needs a terminal; use `cyberdrew runs`, `events` or `functions` in scripts")
	}
	if o.getenv("TERM") == "dumb" {
		return usageErrorf("dash needs a terminal that can move its cursor, and TERM=dumb cannot; " +
			"set TERM to your terminal's type (xterm-256color) or use `cyberdrew runs`, `events` or `functions`")
	}
	// Fail before taking the screen when the daemon cannot be reached or
	// refuses the key.
	const pingWait = 5 * time.Second
	pingCtx, cancel := context.WithTimeout(ctx, pingWait)
	_, err := c.Stats(pingCtx)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// A server that took the connection and never answered.
		err = &client.UnreachableError{URL: c.URL(), Err: fmt.Errorf("it did not answer within %s", pingWait)}
	}
	if err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	if o.logFile != "" {
		lf, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("dash: log file: %w", err)
		}
		defer lf.Close()
		logger = slog.New(slog.NewTextHandler(lf, nil))
	}
	// Anything else that logs through the default logger must not draw on
	// the screen either.
	prev := slog.Default()
	slog.SetDefault(logger)
	defer slog.SetDefault(prev)

	dark, known := darkBackground(o.getenv)
	profile := dashProfile(o.getenv)
	err = tui.Run(ctx, tui.FromClient(c), o.in, o.out, tui.Options{
		Examples: dashExamples(), Profile: profile, Light: !dark, Logger: logger,
		// Without colours the background does not matter.
		AskBackground: !known && profile >= colorprofile.ANSI,
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// dashProfile is the colour profile the environment allows the dash on its
// terminal: none with NO_COLOR set to anything (or CLICOLOR=0 unless
// CLICOLOR_FORCE), else as TERM and COLORTERM say. It is told to Bubble
// Tea, which would otherwise read the process's environment.
func dashProfile(getenv func(string) string) colorprofile.Profile {
	force := getenv("CLICOLOR_FORCE")
	forced := force != "" && force != "0"
	if getenv("NO_COLOR") != "" || (getenv("CLICOLOR") == "0" && !forced) {
		return colorprofile.ASCII
	}
	var env []string
	for _, k := range []string{"TERM", "COLORTERM", "CLICOLOR_FORCE", "WT_SESSION", "GOOGLE_CLOUD_SHELL"} {
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	// Without TERM the profile is colourless: the dash draws no colour or
	// attribute, as with NO_COLOR.
	return max(colorprofile.Env(env), colorprofile.ASCII)
}

// darkBackground says whether the terminal's background is dark, as
// COLORFGBG says ("15;0" is white on black); known is false without it,
// and the dash then asks the terminal, waiting for no answer (dark until
// one comes).
func darkBackground(getenv func(string) string) (dark, known bool) {
	fgbg := getenv("COLORFGBG")
	if i := strings.LastIndexByte(fgbg, ';'); i >= 0 {
		if n, err := strconv.Atoi(fgbg[i+1:]); err == nil && n >= 0 && n < 256 {
			c, _ := colorful.MakeColor(ansi.IndexedColor(n))
			_, _, l := c.Hsl()
			return l < 0.5, true
		}
	}
	return true, false
}

// dashExamples are the site's known events with their sample payloads.
func dashExamples() []tui.Example {
	now := time.Now()
	var out []tui.Example
	for _, name := range siteEventNames() {
		data, _ := examplePayload(name, now)
		out = append(out, tui.Example{Name: name, Data: data})
	}
	return out
}
