package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// refreshOptions are the refresh command's flags and streams.
type refreshOptions struct {
	*clientFlags
	Timeout     time.Duration
	Out, ErrOut io.Writer
}

func newRefreshCmd(opts Options) *cobra.Command {
	o := &refreshOptions{clientFlags: newClientFlags(opts)}
	cmd := &cobra.Command{
		Use:   "refresh",
		Short: "Refresh the GitHub contributions cache now and print it",
		Long: `Send github/data.refresh {"manual":true,"force":true}, wait for the refresh
(it is debounced by 5 seconds), then print the total contributions and when
the cache was updated, read back through /api/github-contributions.

The daemon needs GITHUB_TOKEN for the refresh to succeed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out, o.ErrOut = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runRefresh(cmd.Context(), o)
		},
	}
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for the refresh")
	o.register(cmd, false)
	return clientCommand(cmd)
}

// refreshResult is refresh's JSON output.
type refreshResult struct {
	EventID            string `json:"event_id"`
	RunID              string `json:"run_id"`
	User               string `json:"user"`
	TotalContributions int    `json:"totalContributions"`
	Days               int    `json:"days"`
	LastUpdated        string `json:"lastUpdated"`
	Source             string `json:"source,omitempty"`
}

func runRefresh(ctx context.Context, o *refreshOptions) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	data, _ := json.Marshal(map[string]bool{"manual": true, "force": true})
	ev := client.Event{Name: jobs.EventGitHubRefresh, Data: data}
	id, res, err := sendAndWait(ctx, c, ev, o.Timeout, o.ErrOut)
	if err != nil {
		return err
	}
	if err := waitOutcome(res, o.Timeout); err != nil {
		printRunResults(o.ErrOut, res.Runs)
		return err
	}
	run, ok := runOf(res, "manual-refresh-github-data")
	if !ok {
		return fmt.Errorf("refresh: no manual-refresh-github-data run for event %s", id)
	}
	var out refreshResult
	if err := json.Unmarshal(run.Output, &out); err != nil {
		return fmt.Errorf("refresh: read the run's output: %w", err)
	}
	out.EventID, out.RunID = id, run.RunID
	// The cache as the site reads it.
	var cached jobs.Contributions
	if out.User != "" {
		if err := c.Get(ctx, "/api/github-contributions", url.Values{"username": {out.User}}, &cached); err != nil {
			return err
		}
		out.TotalContributions, out.LastUpdated, out.Source, out.Days = cached.TotalContributions, cached.LastUpdated, cached.Source, len(cached.Contributions)
	}
	if o.json() {
		return writeJSON(o.Out, out)
	}
	t := newTable(o.Out)
	fmt.Fprintf(t, "user:\t%s\n", out.User)
	fmt.Fprintf(t, "contributions:\t%d (%d days)\n", out.TotalContributions, out.Days)
	fmt.Fprintf(t, "cache updated:\t%s\n", out.LastUpdated)
	fmt.Fprintf(t, "run:\t%s\n", out.RunID)
	return t.Flush()
}

// sendAndWait sends ev and waits for the runs it triggers.
func sendAndWait(ctx context.Context, c *client.Client, ev client.Event, timeout time.Duration, errOut io.Writer) (string, waitResult, error) {
	ids, err := c.Send(ctx, ev)
	if err != nil {
		return "", waitResult{}, err
	}
	if len(ids) != 1 {
		return "", waitResult{}, fmt.Errorf("send: the daemon answered %d ids for one event", len(ids))
	}
	st, err := c.Stream(ctx, client.StreamFilter{EventID: ids[0]})
	if err != nil {
		return "", waitResult{}, err
	}
	spin := startSpinner(errOut, "waiting for "+ev.Name)
	res, err := waitForRuns(ctx, c, st, ids[0], ev.Name, timeout, spin)
	spin.Stop()
	return ids[0], res, err
}

// runOf finds the run of a function.
func runOf(res waitResult, functionID string) (client.RunDetail, bool) {
	for _, r := range res.Runs {
		if r.FunctionID == functionID {
			return r, true
		}
	}
	return client.RunDetail{}, false
}
