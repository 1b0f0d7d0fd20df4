package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// sendOptions are the send command's flags and streams.
type sendOptions struct {
	*clientFlags
	Name    string
	Data    string
	ID      string
	TS      string
	User    string
	Example bool
	Wait    bool
	Timeout time.Duration

	In          io.Reader
	Out, ErrOut io.Writer
	Now         func() time.Time
}

func newSendCmd(opts Options) *cobra.Command {
	o := &sendOptions{clientFlags: newClientFlags(opts), Now: time.Now}
	cmd := &cobra.Command{
		Use:   "send NAME",
		Short: "Send an event to the daemon",
		Long: `Send one event through the event API (POST /e/{key}), print its id and the
functions it triggered; with --wait, follow those runs to their end and
print each run's status with its output or error.

The data is a JSON object from --data '{…}', --data @file.json or --data -
(stdin); --example fills a sample payload for the site's known events.
--wait exits 7 when a run failed or was cancelled, 8 when --timeout passed.`,
		Example: `  cyberdrew send test/hello.world --data '{"email":"a@b.c"}' --wait
  cyberdrew send blog/post.viewed --example
  cyberdrew send contact/form.submitted --data @contact.json --id contact-42
  echo '{"email":"a@b.c"}' | cyberdrew send test/hello.world --data - -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeEventNames(opts),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			o.In, o.Out, o.ErrOut = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runSend(cmd.Context(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.Data, "data", "d", "", "event data: a JSON object, @file.json, or - for stdin")
	fs.StringVar(&o.ID, "id", "", "idempotency id: another event with it within 24h triggers nothing")
	fs.StringVar(&o.TS, "ts", "", "event time: milliseconds since the epoch or RFC 3339 (a future time delays its runs)")
	fs.StringVar(&o.User, "user", "", "user object, JSON")
	fs.BoolVar(&o.Example, "example", false, "use a sample payload of a known site event")
	fs.BoolVarP(&o.Wait, "wait", "w", false, "wait for the triggered runs and print their results")
	fs.DurationVar(&o.Timeout, "timeout", time.Minute, "how long --wait waits")
	o.register(cmd, false)
	return clientCommand(cmd)
}

// readData reads --data: inline JSON, @file or - (stdin).
func readData(v string, in io.Reader) (json.RawMessage, error) {
	var (
		b    []byte
		err  error
		from = "--data"
	)
	switch {
	case v == "-":
		b, err = io.ReadAll(in)
		from = "stdin"
	case strings.HasPrefix(v, "@"):
		b, err = os.ReadFile(v[1:])
		from = v[1:]
	default:
		b = []byte(v)
	}
	if err != nil {
		return nil, usageErrorf("--data: %v", err)
	}
	return jsonObject(from, b)
}

// jsonObject checks that b is one JSON object.
func jsonObject(from string, b []byte) (json.RawMessage, error) {
	b = bytes.TrimSpace(b)
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		reason := "want a JSON object {…}"
		if err != nil && len(b) > 0 && b[0] == '{' {
			reason = "malformed JSON: " + err.Error()
		}
		return nil, usageErrorf("%s: %s", from, reason)
	}
	return b, nil
}

func parseTS(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t, perr := time.Parse(time.RFC3339Nano, v)
		if perr != nil {
			return 0, usageErrorf("--ts %q: want milliseconds since the epoch or an RFC 3339 time", v)
		}
		ms = t.UnixMilli()
	}
	if ms < 0 || ms > store.MaxMS {
		return 0, usageErrorf("--ts %q: want a time from 1970 to %s", v, store.MaxTime.Format(time.RFC3339Nano))
	}
	return ms, nil
}

// sendResult is send's JSON output.
type sendResult struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Runs     any    `json:"runs"`
	TimedOut bool   `json:"timed_out,omitempty"`
	// Duplicate: the event was sent before with the same id (within 24 h);
	// Runs are that event's. Pruned: and retention has removed it since.
	Duplicate bool `json:"duplicate,omitempty"`
	Pruned    bool `json:"pruned,omitempty"`
}

func runSend(ctx context.Context, o *sendOptions) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	ev := client.Event{Name: o.Name, ID: o.ID}
	switch {
	case o.Example && o.Data != "":
		return usageErrorf("--example and --data are exclusive")
	case o.Example:
		data, ok := examplePayload(o.Name, o.Now())
		if !ok {
			return usageErrorf("--example: no sample for %q; known events: %s", o.Name, strings.Join(siteEventNames(), ", "))
		}
		ev.Data = data
	case o.Data != "":
		if ev.Data, err = readData(o.Data, o.In); err != nil {
			return err
		}
	}
	if o.User != "" {
		if ev.User, err = jsonObject("--user", []byte(o.User)); err != nil {
			return err
		}
	}
	if ev.TS, err = parseTS(o.TS); err != nil {
		return err
	}
	return sendAndReport(ctx, c, o.clientFlags, ev, o.Wait, o.Timeout, o.Out, o.ErrOut)
}

// sendAndReport sends ev and prints what it triggered; with wait it follows
// the runs and reports their ends.
func sendAndReport(ctx context.Context, c *client.Client, f *clientFlags, ev client.Event, wait bool, timeout time.Duration, out, errOut io.Writer) error {
	sent, err := c.SendAll(ctx, ev)
	if err != nil {
		return err
	}
	if len(sent.IDs) != 1 {
		return fmt.Errorf("send: the daemon answered %d ids for one event", len(sent.IDs))
	}
	id := sent.IDs[0]
	// A duplicate: an event sent before with the same --id, whose runs
	// are the ones listed below, not new ones.
	duplicate := len(sent.Duplicates) > 0
	// An event sent again with the id of one that retention has pruned
	// since (retention under the 24 h in which an id is remembered) is
	// answered with that event's id, which names nothing any more.
	pruned := func(idPrinted bool) error {
		if f.json() {
			return writeJSON(out, sendResult{ID: id, Name: ev.Name, Runs: []client.Run{}, Duplicate: true, Pruned: true})
		}
		if !idPrinted {
			fmt.Fprintf(out, "%s\n", id)
		}
		fmt.Fprintf(errOut, "sent %s: a duplicate of event %s, sent before with the same id and since pruned by retention; nothing was triggered\n", ev.Name, id)
		return nil
	}
	if !wait {
		runs, err := c.EventRuns(ctx, id)
		listed := true
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status == 401 {
			fmt.Fprintln(errOut, "note: cannot list the triggered runs: set INNGEST_SIGNING_KEY (--token)")
			err, runs, listed = nil, nil, false
		}
		if client.IsStatus(err, http.StatusNotFound) {
			return pruned(false)
		}
		if err != nil {
			return err
		}
		if f.json() {
			if runs == nil {
				runs = []client.Run{}
			}
			return writeJSON(out, sendResult{ID: id, Name: ev.Name, Runs: runs, Duplicate: duplicate})
		}
		fmt.Fprintf(out, "%s\n", id)
		// Without listed, its runs are unknown, not missing: the note above
		// says why.
		switch {
		case duplicate && !listed:
			fmt.Fprintf(errOut, "sent %s: %s\n", ev.Name, duplicateNote(id))
		case duplicate && len(runs) == 0:
			fmt.Fprintf(errOut, "sent %s: %s; the first triggered no run\n", ev.Name, duplicateNote(id))
		case duplicate:
			fmt.Fprintf(errOut, "sent %s: %s (its runs:)\n", ev.Name, duplicateNote(id))
		case listed && len(runs) == 0:
			fmt.Fprintf(errOut, "sent %s: %s\n", ev.Name, noRunsYet(ctx, c, ev.Name))
		}
		for _, r := range runs {
			fmt.Fprintf(errOut, "triggered %s (run %s, %s)\n", r.FunctionID, r.RunID, r.Status)
		}
		return nil
	}
	// The event is stored: its id comes first, whatever the wait then
	// meets (a refused signing key, a timeout).
	if f.json() {
		fmt.Fprintf(errOut, "sent %s: event %s\n", ev.Name, id)
	} else {
		fmt.Fprintf(out, "%s\n", id)
	}
	if duplicate {
		fmt.Fprintf(errOut, "sent %s: %s: waiting for its runs\n", ev.Name, duplicateNote(id))
	}
	// The stream filtered on the event follows its runs, those that exist
	// (the daemon seeds the filter with them) and those still to come;
	// waitForRuns lists them once the stream is open, so nothing is missed.
	st, err := c.Stream(ctx, client.StreamFilter{EventID: id})
	if err != nil {
		return err
	}
	spin := startSpinner(errOut, "waiting for "+ev.Name)
	res, err := waitForRuns(ctx, c, st, id, ev.Name, timeout, spin)
	spin.Stop()
	if client.IsStatus(err, http.StatusNotFound) {
		return pruned(true) // the event's runs: no event of that id any more
	}
	if err != nil {
		return err
	}
	if f.json() {
		runs := res.Runs
		if runs == nil {
			runs = []client.RunDetail{}
		}
		if err := writeJSON(out, sendResult{ID: id, Name: ev.Name, Runs: runs, TimedOut: res.TimedOut, Duplicate: duplicate}); err != nil {
			return err
		}
	} else {
		if len(res.Runs) == 0 && !res.TimedOut {
			fmt.Fprintf(errOut, "no function is triggered by %s\n", ev.Name)
		}
		printRunResults(out, res.Runs)
	}
	return waitOutcome(res, timeout)
}

// duplicateNote says that the event sent was answered as a duplicate of
// event id.
func duplicateNote(id string) string {
	return "a duplicate of event " + id + ", sent before with the same id within 24 h; nothing new was triggered"
}

// noRunsYet says why an event sent has no run yet: no enabled function's
// trigger matches its name, or they have not started (a delayed ts,
// debounce, a daemon behind).
func noRunsYet(ctx context.Context, c *client.Client, name string) string {
	if fns, err := c.Functions(ctx); err == nil && triggeredBy(fns, name) == 0 {
		return "no enabled function is triggered by it (see cyberdrew functions list)"
	}
	return "no run started yet"
}
