package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
)

func newEventsCmd(opts Options) *cobra.Command {
	f := newClientFlags(opts)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List and show stored events",
		Long:  "List and show the events the daemon stored, with the runs each triggered.",
		Args:  cobra.NoArgs,
	}
	f.register(cmd, true)
	cmd.AddCommand(newEventsListCmd(opts, f), newEventsShowCmd(opts, f))
	return clientCommand(cmd)
}

// eventsListOptions are events list's filters.
type eventsListOptions struct {
	*clientFlags
	Name   string
	Since  string
	Until  string
	Limit  int
	Cursor string
	Quiet  bool
	Out    io.Writer
	ErrOut io.Writer
	Now    func() time.Time
}

func newEventsListCmd(opts Options, f *clientFlags) *cobra.Command {
	o := &eventsListOptions{clientFlags: f, Now: time.Now}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List events, newest first",
		Example: `  cyberdrew events list --name blog/post.viewed --since 1h`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out, o.ErrOut = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runEventsList(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Name, "name", "", "only events with this name")
	fs.StringVar(&o.Since, "since", "", "only events received since: RFC 3339 time or a duration ago (24h)")
	fs.StringVar(&o.Until, "until", "", "only events received before: RFC 3339 time or a duration ago")
	fs.IntVarP(&o.Limit, "limit", "n", 20, "most events to list (1 to 1000)")
	fs.StringVar(&o.Cursor, "cursor", "", "cursor of the next page, printed after a full page")
	fs.BoolVarP(&o.Quiet, "quiet", "q", false, "print only the event ids, one a line")
	_ = cmd.RegisterFlagCompletionFunc("name", completeEventNames(opts))
	return cmd
}

func runEventsList(ctx context.Context, o *eventsListOptions) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	f := client.EventFilter{Name: o.Name, Limit: o.Limit, Cursor: o.Cursor}
	if err := checkLimit(o.Limit); err != nil {
		return err
	}
	if f.Since, err = parseTimeFlag("since", o.Since, o.Now()); err != nil {
		return err
	}
	if f.Until, err = parseTimeFlag("until", o.Until, o.Now()); err != nil {
		return err
	}
	p, err := c.Events(ctx, f)
	if err != nil {
		return err
	}
	if o.json() {
		if p.Data == nil {
			p.Data = []client.StoredEvent{}
		}
		return writeJSON(o.Out, p)
	}
	if o.Quiet {
		for _, e := range p.Data {
			fmt.Fprintln(o.Out, e.InternalID)
		}
		if p.Cursor != "" {
			// stdout keeps only ids; the next page's cursor goes aside.
			fmt.Fprintf(o.ErrOut, "more: --cursor %s\n", p.Cursor)
		}
		return nil
	}
	t := newTable(o.Out)
	fmt.Fprintln(t, "EVENT\tNAME\tRECEIVED\tID")
	for _, e := range p.Data {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", e.InternalID, e.Name, formatTime(e.ReceivedAt), orDash(e.ID))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if p.Cursor != "" {
		fmt.Fprintf(o.Out, "more: --cursor %s\n", p.Cursor)
	}
	return nil
}

// eventDetail is events show's JSON: the event and its runs.
type eventDetail struct {
	client.StoredEvent
	Runs []client.Run `json:"runs"`
}

func newEventsShowCmd(opts Options, f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "show EVENT_ID",
		Short:             "Show an event with the runs it triggered (EVENT_ID: its id, or the --id it was sent with)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeEventIDs(opts),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			e, err := c.Event(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			runs, err := c.EventRuns(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if runs == nil {
				runs = []client.Run{}
			}
			w := cmd.OutOrStdout()
			if f.json() {
				return writeJSON(w, eventDetail{StoredEvent: e, Runs: runs})
			}
			t := newTable(w)
			fmt.Fprintf(t, "event:\t%s\n", e.InternalID)
			fmt.Fprintf(t, "name:\t%s\n", e.Name)
			fmt.Fprintf(t, "id:\t%s\n", orDash(e.ID))
			fmt.Fprintf(t, "ts:\t%s\n", time.UnixMilli(e.TS).UTC().Format(time.RFC3339Nano))
			fmt.Fprintf(t, "received:\t%s\n", formatTime(e.ReceivedAt))
			fmt.Fprintf(t, "data:\t%s\n", compactJSON(e.Data))
			if len(e.User) > 0 && string(e.User) != "{}" {
				fmt.Fprintf(t, "user:\t%s\n", compactJSON(e.User))
			}
			if e.V != "" {
				fmt.Fprintf(t, "v:\t%s\n", e.V)
			}
			if err := t.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(w)
			if len(runs) == 0 {
				fmt.Fprintln(w, "no runs")
				return nil
			}
			reasons := map[string]string{}
			for _, sk := range e.Skipped {
				reasons[sk.RunID] = sk.Reason
			}
			t = newTable(w)
			fmt.Fprintln(t, "RUN\tFUNCTION\tSTATUS\tDURATION\tREASON")
			for _, r := range runs {
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", r.RunID, r.FunctionID, r.Status, orDash(runDuration(r)), orDash(reasons[r.RunID]))
			}
			return t.Flush()
		},
	}
}
