package daemon_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// pacedFunction's steps take the time the event asks for.
const pacedFunction = "paced"

// pacedFunctions: a step "work" that records its start, works for
// event.data.ms milliseconds (giving up when its context ends), and records
// that it completed; then a step "after" that records itself. Each
// completed execution returns, and records, a value unique to it, so the
// step's stored result names the execution it came from. Ledger lines:
// "start <run> <pid>", "work <run> <value> <pid>", "after <run> <value> <pid>".
func pacedFunctions(dir string) []engine.Function {
	l := newLedger(dir)
	var executions atomic.Int64
	done := func(what, runID string) (string, error) {
		value := fmt.Sprintf("%d-%d", os.Getpid(), executions.Add(1))
		return value, l.record(what, runID, value)
	}
	return []engine.Function{{
		ID: pacedFunction, Triggers: []engine.Trigger{{Event: "test/paced"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			var data struct {
				MS int `json:"ms"`
			}
			if err := json.Unmarshal(r.Event.Data, &data); err != nil {
				return nil, engine.NonRetriable(err)
			}
			if _, err := engine.Step(ctx, r, "work", func(ctx context.Context) (string, error) {
				if err := l.record("start", r.ID); err != nil {
					return "", err
				}
				select {
				case <-time.After(time.Duration(data.MS) * time.Millisecond):
				case <-ctx.Done():
					return "", ctx.Err()
				}
				return done("work", r.ID)
			}); err != nil {
				return nil, err
			}
			return engine.Step(ctx, r, "after", func(ctx context.Context) (string, error) {
				return done("after", r.ID)
			})
		},
	}}
}

// sendPaced posts one test/paced event per duration and returns the ids of
// their runs, in order.
func sendPaced(t *testing.T, c client, ms ...int) []string {
	t.Helper()
	body := make([]string, len(ms))
	for i, m := range ms {
		body[i] = fmt.Sprintf(`{"name":"test/paced","data":{"ms":%d}}`, m)
	}
	var acc struct {
		IDs []string `json:"ids"`
	}
	if code := c.do("POST", "/e/k", "["+strings.Join(body, ",")+"]", &acc); code != 200 || len(acc.IDs) != len(ms) {
		t.Fatalf("intake: %d, %d ids", code, len(acc.IDs))
	}
	var runs []string
	for _, id := range acc.IDs {
		var ans runsAnswer
		c.do("GET", "/v1/events/"+id+"/runs", "", &ans)
		if len(ans.Data) != 1 {
			t.Fatalf("event %s has %d runs", id, len(ans.Data))
		}
		runs = append(runs, ans.Data[0].RunID)
	}
	return runs
}

// ledgerCounts counts the ledger lines of dir by "<what> <run>".
func ledgerCounts(t *testing.T, dir string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, f := range readLedgers(t, dir) {
		counts[f[0]+" "+f[1]]++
	}
	return counts
}

// waitLedger polls the ledgers of dir until every run has a line what, or
// fails after within. A ledger is a file: there is no change to wait on.
func waitLedger(t *testing.T, dir, what string, runs []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		counts, missing := ledgerCounts(t, dir), 0
		for _, id := range runs {
			if counts[what+" "+id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d runs have no %q line after %v", missing, len(runs), what, within)
		}
		<-tick.C
	}
}

// TestSIGTERMDrainsShortStepsAndHandsBackLongOnes sends SIGTERM to a
// `cyberdrew serve` child whose workers are all in a step: the steps
// shorter than --shutdown-timeout complete and are recorded, the longer
// ones are interrupted and their runs handed back at once (no lease, no
// failed attempt), the process exits 0 within the timeout, and a restart
// on the same data dir completes every run without repeating a step.
func TestSIGTERMDrainsShortStepsAndHandsBackLongOnes(t *testing.T) {
	t.Parallel()
	const (
		timeout = time.Second
		short   = 300  // ms: finishes within the timeout
		long    = 2500 // ms: does not
		// The lease is far longer than the test: a run not handed back
		// could not be claimed again by the restarted daemon in time.
		lease = "60s"
	)
	dir := t.TempDir()
	args := []string{"--shutdown-timeout", timeout.String(), "--workers", "8", "--lease", lease}
	child := spawnServe(t, dir, "shutdown", args...)
	c := client{t: t, base: child.base}
	shortRuns := sendPaced(t, c, short, short, short, short)
	longRuns := sendPaced(t, c, long, long, long, long)
	all := append(append([]string{}, shortRuns...), longRuns...)
	waitLedger(t, dir, "start", all, 10*time.Second)

	sent := time.Now()
	if err := child.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.cmd.Wait() }()
	select {
	case err := <-exited:
		took := time.Since(sent)
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM, want 0", err)
		}
		t.Logf("serve exited 0 %v after SIGTERM (shutdown timeout %v)", took, timeout)
		if took > timeout+3*time.Second {
			t.Errorf("serve took %v to exit, want within %v and a margin", took, timeout)
		}
	case <-time.After(timeout + 5*time.Second):
		t.Fatalf("serve still running %v after SIGTERM", timeout+5*time.Second)
	}

	// The daemon is gone: read its file as it left it.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "cyberdrew.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	counts := ledgerCounts(t, dir)
	now := time.Now().UnixMilli()
	for _, id := range shortRuns {
		var status string
		// A step's status NULL is Completed (sqlite/migrations/0003_lean_records.sql).
		if err := db.QueryRow(`SELECT COALESCE(status, 'Completed') FROM steps WHERE run = (SELECT n FROM runs WHERE id = ?) AND id = 'work'`, id).Scan(&status); err != nil || status != "Completed" {
			t.Errorf("short run %s: step work is %q (%v), want Completed", id, status, err)
		}
		if counts["work "+id] != 1 {
			t.Errorf("short run %s: step work completed %d times before the exit", id, counts["work "+id])
		}
	}
	for _, id := range longRuns {
		var (
			status    string
			token     sql.NullString
			available sql.NullInt64
		)
		if err := db.QueryRow(`SELECT status, lease_token, available_at FROM runs WHERE id = ?`, id).Scan(&status, &token, &available); err != nil {
			t.Fatal(err)
		}
		if token.Valid || !available.Valid || available.Int64 > now {
			t.Errorf("long run %s was not handed back: status %s, lease %v, available at %v (now %d)", id, status, token, available, now)
		}
		var steps int
		db.QueryRow(`SELECT count(*) FROM steps WHERE run = (SELECT n FROM runs WHERE id = ?) AND (id = 'work' OR attempts IS NULL OR json_array_length(attempts) > 0)`, id).Scan(&steps)
		if steps != 0 {
			t.Errorf("long run %s: the interrupted step left a record", id)
		}
		if counts["work "+id] != 0 {
			t.Errorf("long run %s: the interrupted step completed", id)
		}
	}
	db.Close()

	restarted := spawnServe(t, dir, "shutdown", args...)
	c = client{t: t, base: restarted.base}
	waitLedger(t, dir, "after", all, 15*time.Second)
	counts = ledgerCounts(t, dir)
	for _, id := range all {
		for _, step := range []string{"work", "after"} {
			if n := counts[step+" "+id]; n != 1 {
				t.Errorf("step %s of run %s completed %d times, want 1", step, id, n)
			}
		}
	}
	for _, id := range all {
		var one struct {
			Data struct {
				Status string `json:"status"`
			} `json:"data"`
		}
		deadline := time.Now().Add(5 * time.Second)
		for c.do("GET", "/v1/runs/"+id, "", &one); one.Data.Status != "Completed"; c.do("GET", "/v1/runs/"+id, "", &one) {
			if time.Now().After(deadline) {
				t.Fatalf("run %s is %s after the restart", id, one.Data.Status)
			}
		}
	}
}
