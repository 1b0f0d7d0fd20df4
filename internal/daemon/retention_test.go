package daemon_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/engine"
)

// TestRetentionKeepsTheFileBounded runs cycles of 400 runs, each with
// a 2 KiB step result, on a daemon with a one-minute retention and a fake
// clock: after each cycle the clock passes the retention, the retention
// loop prunes every row, and the file gives the freed pages back, so its
// size after a prune does not grow from one cycle to the next.
func TestRetentionKeepsTheFileBounded(t *testing.T) {
	t.Parallel()
	const (
		cycles    = 4
		perCycle  = 400
		retention = time.Minute
	)
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Retention = retention
	clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	bulky := engine.Function{
		ID: "bulky", Triggers: []engine.Trigger{{Event: "test/bulky"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "fill", func(ctx context.Context) (string, error) {
				return strings.Repeat("x", 2048), nil
			})
		},
	}
	ctx := context.Background()
	d, err := daemon.New(ctx, cfg, slog.New(slog.DiscardHandler), daemon.Options{Clock: clock, Functions: []engine.Function{bulky}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(context.Background()) })
	c := client{t: t, base: "http://" + d.Addr()}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "cyberdrew.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(query string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	// until polls the database (no change announces a prune) until cond
	// holds, failing after a deadline.
	until := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("cycle: %s did not happen within 30 s", what)
			}
			<-tick.C
		}
	}

	var after []int // page_count after each cycle's prune
	for cycle := range cycles {
		for sent := 0; sent < perCycle; sent += 100 {
			body := make([]string, 100)
			for i := range body {
				body[i] = fmt.Sprintf(`{"name":"test/bulky","data":{"n":%d}}`, sent+i)
			}
			if code := c.do("POST", "/e/k", "["+strings.Join(body, ",")+"]", nil); code != 200 {
				t.Fatalf("intake: %d", code)
			}
		}
		until("every run completing", func() bool {
			return count(`SELECT count(*) FROM runs WHERE status = 'Completed'`) == perCycle
		})
		full := count(`PRAGMA page_count`)
		clock.Advance(retention + retention/4 + time.Second)
		until("the prune", func() bool {
			return count(`SELECT count(*) FROM runs`) == 0 && count(`SELECT count(*) FROM events`) == 0 &&
				count(`SELECT count(*) FROM steps`) == 0
		})
		pages, free := count(`PRAGMA page_count`), count(`PRAGMA freelist_count`)
		t.Logf("cycle %d: %d pages with %d runs, %d pages (%d free) after the prune", cycle+1, full, perCycle, pages, free)
		if free > 100 {
			t.Errorf("cycle %d: %d free pages left in the file after the prune", cycle+1, free)
		}
		after = append(after, pages)
	}
	for i, pages := range after[1:] {
		if pages > after[0]+after[0]/10 {
			t.Errorf("the file grows: %d pages after the first prune, %d after prune %d", after[0], pages, i+2)
		}
	}
}

// TestFunctionRetentionPrunesItsCompletedRuns: on each store, a function
// with a retention of an hour loses its completed runs (and their events)
// an hour after they ended, while its failed run and another function's
// runs keep the daemon's retention.
func TestFunctionRetentionPrunesItsCompletedRuns(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, cfg config.Serve) {
		clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
		handler := func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "work", func(ctx context.Context) (string, error) {
				if strings.Contains(string(r.Event.Data), "fail") {
					return "", engine.NonRetriable(errors.New("told to fail"))
				}
				return "done", nil
			})
		}
		fns := []engine.Function{
			{ID: "brief", Triggers: []engine.Trigger{{Event: "test/brief"}}, Retention: time.Hour, Handler: handler},
			{ID: "kept", Triggers: []engine.Trigger{{Event: "test/kept"}}, Handler: handler},
		}
		d := daemontest.Run(t, cfg, nil, daemon.Options{Clock: clock, Functions: fns})
		c := client{t: t, base: "http://" + d.Addr()}
		changes := c.stream("")
		send := func(name, data string) (event, run string) {
			t.Helper()
			var acc struct {
				IDs []string `json:"ids"`
			}
			if code := c.do("POST", "/e/k", fmt.Sprintf(`{"name":%q,"data":%s}`, name, data), &acc); code != 200 {
				t.Fatalf("intake: %d", code)
			}
			var runs runsAnswer
			c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
			if len(runs.Data) != 1 {
				t.Fatalf("runs of %s = %+v", name, runs.Data)
			}
			return acc.IDs[0], runs.Data[0].RunID
		}
		briefEvent, briefRun := send("test/brief", `{}`)
		_, failedRun := send("test/brief", `{"fail":true}`)
		keptEvent, keptRun := send("test/kept", `{}`)
		// The three run at once and end in any order.
		awaitRuns(t, changes, []string{briefRun, failedRun, keptRun}, 10*time.Second)

		clock.Advance(time.Hour + 15*time.Minute)
		deadline := time.Now().Add(30 * time.Second)
		for c.do("GET", "/v1/runs/"+briefRun, "", nil) != 404 {
			if time.Now().After(deadline) {
				t.Fatalf("the completed run of brief was not pruned an hour after it ended")
			}
			time.Sleep(20 * time.Millisecond) // no change announces a prune
		}
		if code := c.do("GET", "/v1/events/"+briefEvent, "", nil); code != 404 {
			t.Errorf("GET the pruned run's event = %d, want 404", code)
		}
		for what, path := range map[string]string{
			"the failed run of brief": "/v1/runs/" + failedRun,
			"the run of kept":         "/v1/runs/" + keptRun,
			"the event of kept":       "/v1/events/" + keptEvent,
		} {
			if code := c.do("GET", path, "", nil); code != 200 {
				t.Errorf("GET %s = %d, want 200: %s must keep the daemon's retention", path, code, what)
			}
		}
	})
}
