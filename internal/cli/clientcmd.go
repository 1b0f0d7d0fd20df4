package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// clientFlags are the flags every command that talks to the daemon takes.
// Flags win over the environment, read when the command runs so that help
// never shows a key.
type clientFlags struct {
	getenv   func(string) string
	server   string
	eventKey string
	token    string
	output   string
}

func newClientFlags(opts Options) *clientFlags {
	return &clientFlags{getenv: opts.Getenv}
}

// register adds the flags to cmd, as persistent flags for a group of
// commands.
func (f *clientFlags) register(cmd *cobra.Command, persistent bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	f.registerOn(fs)
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion(outputTable, outputJSON))
}

func (f *clientFlags) registerOn(fs *pflag.FlagSet) {
	f.registerConnection(fs)
	fs.StringVarP(&f.output, "output", "o", outputTable, "output format: table or json")
}

// registerConnection adds the flags that reach the daemon, without -o.
func (f *clientFlags) registerConnection(fs *pflag.FlagSet) {
	f.output = outputTable
	fs.StringVar(&f.server, "server", "", "daemon URL (env CYBERDREW_URL, default "+client.DefaultURL+")")
	fs.StringVar(&f.eventKey, "event-key", "", "event key of the event API (env INNGEST_EVENT_KEY)")
	fs.StringVar(&f.token, "token", "", "signing key, the admin API's bearer token (env INNGEST_SIGNING_KEY)")
}

func (f *clientFlags) or(flag, env string) string {
	if flag != "" {
		return flag
	}
	return f.getenv(env)
}

// client checks the output format and builds the daemon's client.
func (f *clientFlags) client() (*client.Client, error) {
	if f.output != outputTable && f.output != outputJSON {
		return nil, usageErrorf("-o %q: want table or json", f.output)
	}
	var headerTimeout time.Duration
	if v := f.or("", "CYBERDREW_REQUEST_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, usageErrorf("CYBERDREW_REQUEST_TIMEOUT %q: want a positive duration such as 30s", v)
		}
		headerTimeout = d
	}
	c, err := client.New(client.Options{
		URL:           f.or(f.server, "CYBERDREW_URL"),
		EventKey:      f.or(f.eventKey, "INNGEST_EVENT_KEY"),
		Token:         f.or(f.token, "INNGEST_SIGNING_KEY"),
		HeaderTimeout: headerTimeout,
	})
	if err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	return c, nil
}

func (f *clientFlags) json() bool { return f.output == outputJSON }

// exitError is a failure with its own exit code.
type exitError struct {
	code ExitCode
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// clientFailure maps an error of the daemon's client to its exit code and a
// message a person can act on; ok is false for other errors.
func clientFailure(err error) (code ExitCode, msg string, ok bool) {
	var (
		ue *client.UnreachableError
		ae *client.APIError
		nd *client.NotDaemonError
	)
	switch {
	case errors.As(err, &nd):
		return ExitUnavailable, fmt.Sprintf("%v\nPoint --server (CYBERDREW_URL) at the daemon's base URL, such as http://127.0.0.1:8288.", err), true
	case errors.As(err, &ue):
		return ExitUnavailable, fmt.Sprintf("%v\nIs the daemon running? Start it with `cyberdrew serve`, or point --server (CYBERDREW_URL) at it.", err), true
	case errors.As(err, &ae):
		switch {
		case ae.Status == http.StatusUnauthorized && ae.Area == client.AreaEvents:
			_, setting, _ := ae.RefusedKey()
			return ExitUnauthorized, "the event API refused the event key (401).\nSet " + setting + " to one of the daemon's event keys.", true
		case ae.Status == http.StatusUnauthorized:
			_, setting, _ := ae.RefusedKey()
			return ExitUnauthorized, "the admin API refused the signing key (401).\nSet " + setting + " to the daemon's signing key.", true
		case ae.Status == http.StatusServiceUnavailable && ae.Area == client.AreaEvents:
			return ExitUnavailable, fmt.Sprintf("the daemon could not store the event: %s\n"+
				"It may have been stored. Resend it with the same --id: an id already stored is not stored or run twice "+
				"(without --id, a resend may store it again).", ae.Message), true
		case ae.Status == http.StatusServiceUnavailable:
			// The daemon's message says why: its store, or a limit of its
			// own (too many streams open).
			return ExitUnavailable, fmt.Sprintf("the daemon is up but cannot serve this now (503): %s", ae.Message), true
		case ae.Status == http.StatusNotFound && ae.Message == "no such route":
			// The daemon, asked for a path it does not serve: a --server
			// with a path of its own.
			return ExitUsage, fmt.Sprintf("the daemon has no %s %s: point --server (CYBERDREW_URL) at its base URL, without a path (now %s)",
				ae.Method, ae.Path, ae.Server), true
		case ae.Status >= 400 && ae.Status < 500:
			return ExitRejected, fmt.Sprintf("the daemon refused the request (%d %s): %s", ae.Status, http.StatusText(ae.Status), ae.Message), true
		default:
			return ExitError, fmt.Sprintf("the daemon failed (%d %s): %s", ae.Status, http.StatusText(ae.Status), ae.Message), true
		}
	}
	return 0, "", false
}

// writeJSON prints v indented.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable is a tab-aligned table on w; Flush it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// spinner shows a line of progress on a terminal; elsewhere it is silent.
type spinner struct {
	w      io.Writer
	mu     sync.Mutex
	msg    string
	stop   chan struct{}
	done   chan struct{}
	active bool
}

func startSpinner(w io.Writer, msg string) *spinner {
	s := &spinner{w: w, msg: msg, stop: make(chan struct{}), done: make(chan struct{})}
	if !isTerminal(w) {
		close(s.done)
		return s
	}
	s.active = true
	go func() {
		defer close(s.done)
		frames := []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			s.mu.Lock()
			fmt.Fprintf(s.w, "\r\033[K%c %s", frames[i%len(frames)], s.msg)
			s.mu.Unlock()
			select {
			case <-s.stop:
				fmt.Fprint(s.w, "\r\033[K")
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// set changes the message.
func (s *spinner) set(msg string) {
	s.mu.Lock()
	s.msg = msg
	s.mu.Unlock()
}

// Stop clears the line.
func (s *spinner) Stop() {
	if s.active {
		close(s.stop)
		s.active = false
	}
	<-s.done
}

// waitResult is what waiting for runs found (--wait); -o json prints it
// beside what the command prints without --wait.
type waitResult struct {
	Runs     []client.RunDetail `json:"runs"`
	TimedOut bool               `json:"timed_out,omitempty"`
}

// failed reports whether any run did not complete.
func (r waitResult) failed() bool {
	for _, run := range r.Runs {
		if run.Status == "Failed" || run.Status == "Cancelled" {
			return true
		}
	}
	return false
}

// waitForRuns follows an event's runs through the stream until every run
// the event triggers has finished, or timeout passes. stream must have been
// opened (filtered on the event) before the event was sent or before its
// runs are listed here, so no change is missed.
func waitForRuns(ctx context.Context, c *client.Client, st *client.Stream, eventID, eventName string, timeout time.Duration, progress *spinner) (waitResult, error) {
	defer func() { st.Close() }() // the last one: a restart of the daemon replaces it
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	fns, err := c.Functions(ctx)
	if err != nil {
		return waitResult{}, err
	}
	expected := triggeredBy(fns, eventName)
	status := map[string]string{}
	order := []string{}
	see := func(id, s string) {
		if _, ok := status[id]; !ok {
			order = append(order, id)
		}
		status[id] = s
	}
	list := func() error {
		runs, err := c.EventRuns(ctx, eventID)
		for _, r := range runs {
			see(r.RunID, r.Status)
		}
		return err
	}
	if err := list(); err != nil {
		return waitResult{}, timeoutOr(ctx, err)
	}
	finished := func() (bool, int) {
		n := 0
		for _, s := range status {
			if client.Finished(s) {
				n++
			}
		}
		return n == len(status) && len(status) >= expected, n
	}
	timedOut := false
	for {
		done, n := finished()
		if done {
			break
		}
		progress.set(fmt.Sprintf("waiting for %s: %d of %d runs finished", eventName, n, max(expected, len(status))))
		select {
		case <-ctx.Done():
			timedOut = true
		case ch, ok := <-st.Changes():
			if !ok {
				// The daemon went away (a restart, a deploy): follow it
				// back within the timeout, then read the runs again for
				// what changed meanwhile.
				progress.set(fmt.Sprintf("waiting for %s: the daemon went away (%v); reconnecting", eventName, st.Err()))
				next, err := reopen(ctx, st)
				if err != nil {
					return waitResult{}, timeoutOr(ctx, err)
				}
				st = next
				if err := list(); err != nil {
					return waitResult{}, timeoutOr(ctx, err)
				}
				continue
			}
			switch {
			case ch.Kind == "resync":
				if err := list(); err != nil {
					return waitResult{}, timeoutOr(ctx, err)
				}
			case ch.Kind == "run" && ch.RunID != "":
				see(ch.RunID, ch.Status)
			}
		}
		if timedOut {
			break
		}
	}
	res := waitResult{TimedOut: timedOut}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer rcancel()
	for _, id := range order {
		d, err := c.Run(rctx, id)
		if err != nil {
			return waitResult{}, err
		}
		res.Runs = append(res.Runs, d)
	}
	return res, nil
}

// triggeredBy counts the enabled functions fns whose trigger matches an
// event named name: the runs an event of that name starts.
func triggeredBy(fns []client.Function, name string) int {
	n := 0
	for _, fn := range fns {
		if fn.Disabled == "" && slices.ContainsFunc(fn.Triggers, func(t client.Trigger) bool { return t.Matches(name) }) {
			n++
		}
	}
	return n
}

// reopen opens the ended stream st again, retrying while the daemon cannot
// be reached or answers 503 (it is starting, or its store is), every half
// second until ctx ends.
func reopen(ctx context.Context, st *client.Stream) (*client.Stream, error) {
	for {
		next, err := st.Reopen(ctx)
		var ue *client.UnreachableError
		if err == nil || !(errors.As(err, &ue) || client.IsStatus(err, http.StatusServiceUnavailable)) {
			return next, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func timeoutOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return &exitError{code: ExitTimeout, err: errors.New("timed out waiting for the daemon")}
	}
	return err
}

// printRunResults writes each run's status with its output or error.
func printRunResults(w io.Writer, runs []client.RunDetail) {
	for _, r := range runs {
		line := fmt.Sprintf("%s  %s  %s", r.FunctionID, r.Status, r.RunID)
		if d := runDuration(r.Run); d != "" {
			line += "  " + d
		}
		fmt.Fprintln(w, line)
		switch {
		case r.Status == "Skipped":
			fmt.Fprintf(w, "  skipped: %s\n", r.Error)
		case r.Error != "":
			fmt.Fprintf(w, "  error:  %s\n", r.Error)
		case len(r.Output) > 0 && string(r.Output) != "null":
			fmt.Fprintf(w, "  output: %s\n", compactJSON(r.Output))
		}
	}
}

// waitOutcome turns a finished wait into the command's error: a timeout or
// a failed run.
func waitOutcome(res waitResult, timeout time.Duration) error {
	switch {
	case res.TimedOut:
		return &exitError{code: ExitTimeout, err: fmt.Errorf("timed out after %s: runs still unfinished", timeout)}
	case res.failed():
		var why []string
		for _, r := range res.Runs {
			if r.Status == "Failed" || r.Status == "Cancelled" {
				// A function's own error may name it already.
				why = append(why, r.FunctionID+": "+strings.TrimPrefix(cmp.Or(r.Error, strings.ToLower(r.Status)), r.FunctionID+": "))
			}
		}
		// The runs' own errors, so that -o json's error says why too.
		return &exitError{code: ExitRunFailed, err: fmt.Errorf("%d of %d runs failed (%s)", len(why), len(res.Runs), strings.Join(why, "; "))}
	}
	return nil
}

func runDuration(r client.Run) string {
	if r.RunStartedAt == nil || r.EndedAt == nil {
		return ""
	}
	return formatDuration(r.EndedAt.Sub(*r.RunStartedAt))
}

func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func formatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// parseTimeFlag reads --since/--until: an RFC 3339 time or a duration ago
// (1h, 30m).
func parseTimeFlag(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usageErrorf("--%s %q: want an RFC 3339 time (2025-01-02T15:04:05Z) or a duration ago (1h)", name, v)
	}
	return t, nil
}

// clientCommand marks a command as talking to the daemon (for completion
// and help grouping).
func clientCommand(cmd *cobra.Command) *cobra.Command {
	cmd.GroupID = groupClient
	cmd.Long += "\n\n" + exitCodesHelp
	return cmd
}
