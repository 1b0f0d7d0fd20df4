package daemon_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// orderFunction runs once per order (its idempotency key).
func orderFunction() engine.Function {
	return engine.Function{
		ID: "order", Triggers: []engine.Trigger{{Event: "app/order.placed"}}, Idempotency: "event.data.order",
		Handler: func(context.Context, *engine.Run) (any, error) { return "done", nil },
	}
}

// TestIdempotencySkipIsVisible sends two events of one order through the
// HTTP intake, without ids, as the site sends them: one run completes, the
// other event's run is Skipped and says why in the admin API, in `send
// --wait` (at once, not after its timeout), in `events show` and in
// /metrics. Events without
// the order each run.
func TestIdempotencySkipIsVisible(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, cfg config.Serve) {
		base := start(t, cfg, []engine.Function{orderFunction()})
		c := client{t: t, base: base}
		changes := c.stream("")

		send := func(body string) string {
			t.Helper()
			var acc struct {
				IDs []string `json:"ids"`
			}
			if code := c.do("POST", "/e/k", body, &acc); code != 200 || len(acc.IDs) != 1 {
				t.Fatalf("intake %s: %d %v", body, code, acc.IDs)
			}
			return acc.IDs[0]
		}
		runsOf := func(id string) runsAnswer {
			t.Helper()
			var runs runsAnswer
			c.do("GET", "/v1/events/"+id+"/runs", "", &runs)
			if len(runs.Data) != 1 {
				t.Fatalf("event %s: runs %+v, want one", id, runs.Data)
			}
			return runs
		}
		first := send(`{"name":"app/order.placed","data":{"order":"o-1"}}`)
		held := runsOf(first).Data[0].RunID
		if st := awaitRun(t, changes, held, 10*time.Second); st != store.StatusCompleted {
			t.Fatalf("first run ended %s, want Completed", st)
		}
		second := send(`[{"name":"app/order.placed","data":{"order":"o-1"}}]`)
		reason := `idempotency key "fn:order:o-1" already used by run ` + held
		var skipped struct {
			Data []struct {
				RunID  string `json:"run_id"`
				Status string `json:"status"`
				Error  string `json:"error"`
			} `json:"data"`
		}
		c.do("GET", "/v1/events/"+second+"/runs", "", &skipped)
		if len(skipped.Data) != 1 || skipped.Data[0].Status != "Skipped" || skipped.Data[0].Error != reason {
			t.Fatalf("second event's runs %+v, want one Skipped with %q", skipped.Data, reason)
		}
		var detail struct {
			Data struct {
				ID      string `json:"id"`
				Skipped []struct {
					FunctionID string `json:"function_id"`
					RunID      string `json:"run_id"`
					Reason     string `json:"reason"`
				} `json:"skipped"`
			} `json:"data"`
		}
		c.do("GET", "/v1/events/"+second, "", &detail)
		if d := detail.Data; d.ID != second || len(d.Skipped) != 1 || d.Skipped[0].FunctionID != "order" ||
			d.Skipped[0].RunID != skipped.Data[0].RunID || d.Skipped[0].Reason != reason {
			t.Fatalf("second event's detail %+v, want its skip with %q", d, reason)
		}

		// send --wait of a third event of the order returns at once
		// with the reason: well within a timeout it would otherwise
		// wait out.
		var out, errOut bytes.Buffer
		code := cli.Run(context.Background(), []string{"send", "app/order.placed", "--data", `{"order":"o-1"}`,
			"--wait", "--timeout", "1m", "--server", base}, &out, &errOut, cli.Options{Getenv: func(string) string { return "" }})
		if code != 0 || !strings.Contains(out.String(), "order  Skipped") ||
			!strings.Contains(out.String(), `skipped: idempotency key "fn:order:o-1" already used by run `+held) {
			t.Fatalf("send --wait = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
		}

		out.Reset()
		errOut.Reset()
		code = cli.Run(context.Background(), []string{"events", "show", second, "--server", base}, &out, &errOut,
			cli.Options{Getenv: func(string) string { return "" }})
		if code != 0 || !strings.Contains(out.String(), skipped.Data[0].RunID) || !strings.Contains(out.String(), reason) {
			t.Fatalf("events show = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
		}

		// Events without the order are never folded: each runs.
		for _, body := range []string{`{"name":"app/order.placed"}`, `{"name":"app/order.placed","data":{"order":""}}`} {
			id := send(body)
			if st := awaitRun(t, changes, runsOf(id).Data[0].RunID, 10*time.Second); st != store.StatusCompleted {
				t.Errorf("%s: run ended %s, want Completed", body, st)
			}
		}

		_, metrics := scrape(t, base, "")
		if want := `cyberdrew_runs_skipped_total{function="order",reason="idempotency"} 2`; !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(metrics, "cyberdrew_runs_skipped"))
		}
	})
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
