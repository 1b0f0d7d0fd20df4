package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/store"
)

func newRunsCmd(opts Options) *cobra.Command {
	f := newClientFlags(opts)
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List, show, cancel and rerun runs",
		Long:  "List, show, cancel and rerun the daemon's runs through its admin API.",
		Args:  cobra.NoArgs,
	}
	f.register(cmd, true)
	cmd.AddCommand(newRunsListCmd(opts, f), newRunsShowCmd(opts, f), newRunsCancelCmd(opts, f), newRunsRerunCmd(opts, f))
	return clientCommand(cmd)
}

// runsListOptions are runs list's filters.
type runsListOptions struct {
	*clientFlags
	Function string
	Status   []string
	EventID  string
	Since    string
	Until    string
	Limit    int
	Cursor   string
	Quiet    bool
	Out      io.Writer
	ErrOut   io.Writer
	Now      func() time.Time
}

func newRunsListCmd(opts Options, f *clientFlags) *cobra.Command {
	o := &runsListOptions{clientFlags: f, Now: time.Now}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List runs, newest first",
		Example: `  cyberdrew runs list --status failed --since 24h
  cyberdrew runs list --function track-post-view --limit 10 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out, o.ErrOut = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runRunsList(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.Function, "function", "f", "", "only runs of this function id")
	fs.StringSliceVarP(&o.Status, "status", "s", nil, "only runs with these statuses: "+strings.Join(runStatuses, ", "))
	fs.StringVar(&o.EventID, "event", "", "only runs triggered by this event id (as send and events list print it, or the --id it was sent with; not a name)")
	fs.StringVar(&o.Since, "since", "", "only runs created since: RFC 3339 time or a duration ago (24h)")
	fs.StringVar(&o.Until, "until", "", "only runs created before: RFC 3339 time or a duration ago")
	fs.IntVarP(&o.Limit, "limit", "n", 20, "most runs to list (1 to 1000)")
	fs.StringVar(&o.Cursor, "cursor", "", "cursor of the next page, printed after a full page")
	fs.BoolVarP(&o.Quiet, "quiet", "q", false, "print only the run ids, one a line")
	_ = cmd.RegisterFlagCompletionFunc("function", completeFunctionIDs(opts))
	_ = cmd.RegisterFlagCompletionFunc("status", fixedCompletion(runStatuses...))
	_ = cmd.RegisterFlagCompletionFunc("event", completeEventIDs(opts))
	return cmd
}

// runStatuses are the statuses --status takes, in any case.
var runStatuses = []string{"queued", "running", "sleeping", "completed", "failed", "cancelled", "skipped"}

func runRunsList(ctx context.Context, o *runsListOptions) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	f := client.RunFilter{Function: o.Function, Statuses: o.Status, EventID: o.EventID, Limit: o.Limit, Cursor: o.Cursor}
	if err := checkLimit(o.Limit); err != nil {
		return err
	}
	for _, st := range o.Status {
		if !slices.Contains(runStatuses, strings.ToLower(st)) {
			return usageErrorf("--status %q: want %s", st, strings.Join(runStatuses, ", "))
		}
	}
	if f.Since, err = parseTimeFlag("since", o.Since, o.Now()); err != nil {
		return err
	}
	if f.Until, err = parseTimeFlag("until", o.Until, o.Now()); err != nil {
		return err
	}
	p, err := c.Runs(ctx, f)
	if err != nil {
		return err
	}
	if len(p.Data) == 0 && o.Cursor == "" {
		if err := checkRunFilter(ctx, c, o.Function, o.EventID); err != nil {
			return err
		}
	}
	if o.json() {
		if p.Data == nil {
			p.Data = []client.Run{}
		}
		return writeJSON(o.Out, p)
	}
	if o.Quiet {
		for _, r := range p.Data {
			fmt.Fprintln(o.Out, r.RunID)
		}
		if p.Cursor != "" {
			// stdout keeps only ids; the next page's cursor goes aside.
			fmt.Fprintf(o.ErrOut, "more: --cursor %s\n", p.Cursor)
		}
		return nil
	}
	t := newTable(o.Out)
	fmt.Fprintln(t, "RUN\tFUNCTION\tSTATUS\tCREATED\tDURATION\tEVENT")
	for _, r := range p.Data {
		d := runDuration(r)
		if d == "" {
			d = "-"
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\n", r.RunID, r.FunctionID, r.Status, formatTime(r.CreatedAt), d, orDash(r.EventID))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if p.Cursor != "" {
		fmt.Fprintf(o.Out, "more: --cursor %s\n", p.Cursor)
	}
	return nil
}

// checkRunFilter explains an empty listing whose --function or --event
// names nothing the daemon knows, instead of printing an empty table.
func checkRunFilter(ctx context.Context, c *client.Client, functionID, eventID string) error {
	if functionID != "" {
		fns, err := c.Functions(ctx)
		if err != nil {
			return err
		}
		ids := make([]string, len(fns))
		for i, fn := range fns {
			ids[i] = fn.ID
		}
		if !slices.Contains(ids, functionID) {
			return &exitError{code: ExitRejected, err: fmt.Errorf("--function %q: no such function; the daemon has %s", functionID, strings.Join(ids, ", "))}
		}
	}
	if eventID != "" {
		_, err := c.Event(ctx, eventID)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
			return err
		}
		msg := fmt.Sprintf("--event %q: no event has this id; --event takes the id that send and events list print", eventID)
		if named, err := c.Events(ctx, client.EventFilter{Name: eventID, Limit: 1}); err == nil && len(named.Data) > 0 {
			msg += fmt.Sprintf("; %s is an event name: list its events with `cyberdrew events list --name %s -q`", eventID, eventID)
		}
		return &exitError{code: ExitRejected, err: errors.New(msg)}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newRunsShowCmd(opts Options, f *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "show RUN_ID",
		Short:             "Show a run with its step timeline: durations, attempts, errors",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeRunIDs(opts),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			d, err := c.Run(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if f.json() {
				return writeJSON(cmd.OutOrStdout(), d)
			}
			return printRunDetail(cmd.OutOrStdout(), d)
		},
	}
	return cmd
}

// printRunDetail renders a run and the timeline of its steps.
func printRunDetail(w io.Writer, d client.RunDetail) error {
	t := newTable(w)
	fmt.Fprintf(t, "run:\t%s\n", d.RunID)
	fmt.Fprintf(t, "function:\t%s\n", d.FunctionID)
	fmt.Fprintf(t, "status:\t%s\n", d.Status)
	fmt.Fprintf(t, "event:\t%s\n", orDash(d.EventID))
	fmt.Fprintf(t, "created:\t%s\n", formatTime(d.CreatedAt))
	started := formatTime(d.RunStartedAt)
	if d.RunStartedAt == nil && d.AvailableAt != nil {
		started += " (starts " + formatTime(d.AvailableAt) + ")"
	}
	fmt.Fprintf(t, "started:\t%s\n", started)
	ended := formatTime(d.EndedAt)
	if dur := runDuration(d.Run); dur != "" {
		ended += " (" + dur + ")"
	}
	fmt.Fprintf(t, "ended:\t%s\n", ended)
	if d.Error != "" {
		fmt.Fprintf(t, "error:\t%s\n", d.Error)
	}
	if len(d.Output) > 0 && string(d.Output) != "null" {
		fmt.Fprintf(t, "output:\t%s\n", compactJSON(d.Output))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(d.Steps) == 0 {
		fmt.Fprintln(w, "no steps")
		return printDeliveries(w, d.Deliveries)
	}
	origin := d.RunStartedAt
	if origin == nil {
		origin = d.CreatedAt
	}
	t = newTable(w)
	fmt.Fprintln(t, "STEP\tKIND\tSTATUS\tAT\tDURATION\tATTEMPTS")
	for _, s := range d.Steps {
		at, dur := "-", "-"
		if origin != nil && s.StartedAt != nil {
			at = "+" + formatDuration(s.StartedAt.Sub(*origin))
		}
		if s.StartedAt != nil && s.EndedAt != nil {
			dur = formatDuration(s.EndedAt.Sub(*s.StartedAt))
		}
		name := s.Name
		if name == "" {
			name = s.ID
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%d\n", name, s.Kind, s.Status, at, dur, len(s.Attempts))
		for i, a := range s.Attempts {
			if a.Error != "" {
				fmt.Fprintf(t, "  attempt %d\tfailed\t\t\t\t%s\n", i+1, oneLine(a.Error))
			}
		}
		if s.WakeAt != nil && !client.Finished(s.Status) {
			fmt.Fprintf(t, "  wakes\t%s\t\t\t\t\n", formatTime(s.WakeAt))
		}
	}
	if err := t.Flush(); err != nil {
		return err
	}
	return printDeliveries(w, d.Deliveries)
}

// printDeliveries renders the latest delivery status of each email the
// run sent, as Resend's webhooks reported it; nothing for other runs.
func printDeliveries(w io.Writer, ds []client.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w)
	fmt.Fprintln(t, "DELIVERY\tSTATUS\tAT\tEVENT")
	for _, d := range ds {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", d.Email, d.Status, formatTime(&d.At), d.EventID)
	}
	return t.Flush()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func newRunsCancelCmd(opts Options, f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "cancel RUN_ID...",
		Short:             "Cancel unfinished runs",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeRunIDs(opts, "Queued", "Running", "Sleeping"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			// Each id is cancelled on its own: one the daemon refuses
			// (unknown, already finished) is named and the others still
			// go; a daemon that cannot be reached stops them all.
			runs := []client.Run{}
			refusals := []cancelRefusal{}
			for _, id := range args {
				r, err := c.Cancel(cmd.Context(), id)
				var ae *client.APIError
				if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusUnauthorized {
					fmt.Fprintf(cmd.ErrOrStderr(), "cancel %s: %s\n", id, ae.Message)
					refusals = append(refusals, cancelRefusal{RunID: id, Status: ae.Status, Error: ae.Message})
					continue
				}
				if err != nil {
					return err
				}
				runs = append(runs, r)
				if !f.json() {
					fmt.Fprintf(cmd.OutOrStdout(), "%s  %s  %s\n", r.RunID, r.FunctionID, r.Status)
				}
			}
			if f.json() {
				// The runs cancelled, and each one refused with why: a
				// script reads both from stdout.
				out := struct {
					Data    []client.Run    `json:"data"`
					Cursor  string          `json:"cursor"` // a list's shape: empty
					Refused []cancelRefusal `json:"refused"`
				}{Data: runs, Refused: refusals}
				if err := writeJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
			}
			if len(refusals) > 0 {
				ids := make([]string, len(refusals))
				for i, r := range refusals {
					ids[i] = r.RunID
				}
				return &exitError{code: ExitRejected, err: fmt.Errorf("%d of %d runs not cancelled: %s", len(ids), len(args), strings.Join(ids, ", "))}
			}
			return nil
		},
	}
}

// cancelRefusal is a run id `runs cancel -o json` could not cancel: the
// daemon's status and message (not found, already finished).
type cancelRefusal struct {
	RunID  string `json:"run_id"`
	Status int    `json:"status"`
	Error  string `json:"error"`
}

func newRunsRerunCmd(opts Options, f *clientFlags) *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:               "rerun RUN_ID",
		Short:             "Start a run's function again with the same event",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeRunIDs(opts),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var st *client.Stream
			if wait {
				if st, err = c.Stream(cmd.Context(), client.StreamFilter{}); err != nil {
					return err
				}
				defer st.Close()
			}
			ref, err := c.Rerun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !wait {
				if f.json() {
					return writeJSON(cmd.OutOrStdout(), ref)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %s  %s\n", ref.RunID, ref.FunctionID, ref.Status)
				return nil
			}
			d, timedOut, err := waitForRun(cmd.Context(), c, st, ref.RunID, timeout, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			res := waitResult{Runs: []client.RunDetail{d}, TimedOut: timedOut}
			if f.json() {
				// What -o json prints without --wait, and the run.
				if err := writeJSON(cmd.OutOrStdout(), struct {
					client.RunRef
					waitResult
				}{ref, res}); err != nil {
					return err
				}
			} else {
				printRunResults(cmd.OutOrStdout(), res.Runs)
			}
			return waitOutcome(res, timeout)
		},
	}
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait for the new run and print its result")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long --wait waits")
	return cmd
}

// waitForRun follows one run on st (opened before the run was created)
// until it finishes or timeout passes.
func waitForRun(ctx context.Context, c *client.Client, st *client.Stream, runID string, timeout time.Duration, errOut io.Writer) (client.RunDetail, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	spin := startSpinner(errOut, "waiting for run "+runID)
	defer spin.Stop()
	d, err := c.Run(ctx, runID)
	timedOut := false
	for err == nil && !d.Finished() && !timedOut {
		select {
		case <-ctx.Done():
			timedOut = true
		case ch, ok := <-st.Changes():
			if !ok {
				return d, false, fmt.Errorf("stream: %w", st.Err())
			}
			if ch.Kind == "resync" || (ch.Kind == "run" && ch.RunID == runID) {
				d, err = c.Run(ctx, runID)
			}
		}
	}
	if err != nil {
		return d, false, timeoutOr(ctx, err)
	}
	return d, timedOut, nil
}

// checkLimit refuses a --limit the admin API would not take (or would
// read as its default), before any request.
func checkLimit(n int) error {
	if n < 1 || n > store.MaxPageLimit {
		return usageErrorf("--limit %d: want 1 to %d", n, store.MaxPageLimit)
	}
	return nil
}
