package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestListingsUseIndexes checks the plan of every /v1/runs and /v1/events
// listing, filtered and not: each reads an index in the listing's order
// (newest id first), so a page stops after its limit and never sorts. A
// listing by a column an index holds searches that index; the others walk
// the table's primary key, its ULID (0005_keyed_by_ulid.sql), from the
// newest.
func TestListingsUseIndexes(t *testing.T) {
	t.Parallel()
	s := openTest(t, filepath.Join(t.TempDir(), "plan.db"), clockwork.NewFakeClock())
	cursor := encodeCursor("run", "01J00000000000000000000000")
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	runs := map[string]store.RunFilter{
		"all":                   {},
		"next page":             {Cursor: cursor},
		"function":              {FunctionID: "track-post-view"},
		"function, next page":   {FunctionID: "track-post-view", Cursor: cursor},
		"status":                {Statuses: []store.Status{store.StatusFailed}},
		"status, next page":     {Statuses: []store.Status{store.StatusQueued}, Cursor: cursor},
		"completed":             {Statuses: []store.Status{store.StatusCompleted}},
		"function and status":   {FunctionID: "track-post-view", Statuses: []store.Status{store.StatusFailed}},
		"function and statuses": {FunctionID: "track-post-view", Statuses: []store.Status{store.StatusCompleted, store.StatusFailed}},
		"since":                 {Since: since},
		"event":                 {EventID: "01J00000000000000000000000"},
	}
	for name, f := range runs {
		query, args, _, err := runsQuery(f)
		if err != nil {
			t.Fatal(err)
		}
		plan := checkPlan(t, s, "runs "+name, query, args, name == "all" || name == "completed" || name == "since")
		// A status other than Completed is found through the index of
		// the runs that did not complete, not by walking every newer run.
		if want := map[string]string{
			"status":              "USING INDEX runs_unfinished_status (status=?)",
			"status, next page":   "USING INDEX runs_unfinished_status (status=? AND id<?)",
			"function and status": "USING INDEX runs_unfinished_function_status (function_id=? AND status=?)",
		}[name]; want != "" && !strings.Contains(plan, want) {
			t.Errorf("runs %s: the plan %q does not say %q", name, plan, want)
		}
	}
	events := map[string]store.EventFilter{
		"all":             {},
		"name":            {Name: "blog/post.viewed"},
		"name, next page": {Name: "blog/post.viewed", Cursor: encodeCursor("event", "01J00000000000000000000000")},
		"since":           {Since: since},
	}
	for name, f := range events {
		query, args, _, err := eventsQuery(f)
		if err != nil {
			t.Fatal(err)
		}
		checkPlan(t, s, "events "+name, query, args, name == "all" || name == "since")
	}
	// Prune finds what it deletes through the key of ids (the primary key
	// of events, the unique index of runs), not by walking every run or
	// event kept.
	for what, query := range map[string]struct{ query, key string }{
		"prune runs":   {pruneRuns, "USING INDEX sqlite_autoindex_runs_1 (id<?)"},
		"prune events": {pruneEvents, "USING PRIMARY KEY (id<?)"},
	} {
		plan := checkPlan(t, s, what, query.query, []any{idFloor(since), since.UnixMilli(), 100}, false)
		if !strings.Contains(plan, query.key) {
			t.Errorf("%s: the plan %q does not search %s", what, plan, query.key)
		}
	}
}

// checkPlan explains query and fails when its plan sorts, or walks the
// whole table of runs or events (by its primary key) when walking is not
// allowed: then it must search an index or the key.
func checkPlan(t *testing.T, s *Store, what, query string, args []any, walk bool) string {
	t.Helper()
	rows, err := s.rdb.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s", what, strings.Join(plan, "; "))
	for _, step := range plan {
		if strings.Contains(step, "TEMP B-TREE") ||
			(!walk && (strings.HasPrefix(step, "SCAN runs") || strings.HasPrefix(step, "SCAN events"))) {
			t.Errorf("%s: the plan %q has %q", what, strings.Join(plan, "; "), step)
		}
	}
	return strings.Join(plan, "; ")
}

// TestMigrateFromVersion2 builds a database of schema version 2 with the
// rows that version wrote (a run fed by one event, a debounced run fed by
// two, steps in the order recorded with attempts as objects, a pending
// wait), opens it, and reads everything back through the store.
func TestMigrateFromVersion2(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "v2.db")
	db, err := sql.Open("sqlite", dsn(path, url.Values{"_pragma": {"auto_vacuum(incremental)"}}))
	if err != nil {
		t.Fatal(err)
	}
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`}
	for _, m := range all {
		if m.version <= 2 {
			stmts = append(stmts, m.sql, fmt.Sprintf("INSERT INTO schema_migrations VALUES (%d, 0)", m.version))
		}
	}
	ms := t0.UnixMilli()
	stmts = append(stmts,
		`INSERT INTO events (id, name, data, ts, received_at) VALUES
		 ('E1', 'blog/post.viewed', '{"slug":"a"}', `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms)+`),
		 ('E2', 'blog/post.saved', '{"n":1}', `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms)+`),
		 ('E3', 'blog/post.saved', '{"n":2}', `+fmt.Sprint(ms-7000)+`, `+fmt.Sprint(ms)+`)`,
		`INSERT INTO runs (id, function_id, event_id, event_ids, status, created_at, started_at, ended_at, output) VALUES
		 ('R1', 'track-post-view', 'E1', '["E1"]', 'Completed', `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms+5000)+`, '{"ok":true}')`,
		`INSERT INTO runs (id, function_id, event_id, event_ids, status, created_at, available_at, debounce_key) VALUES
		 ('R2', 'rebuild', 'E3', '["E2","E3"]', 'Queued', `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms+60000)+`, 'k')`,
		`INSERT INTO runs (id, function_id, event_id, event_ids, status, created_at, started_at, available_at) VALUES
		 ('R3', 'approve', 'E1', '["E1"]', 'Sleeping', `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms+3600000)+`)`,
		`INSERT INTO run_events (event_id, run_id) VALUES ('E1', 'R1'), ('E2', 'R2'), ('E3', 'R2'), ('E1', 'R3')`,
		// Recorded b first, then a: the order must survive.
		`INSERT INTO steps (run_id, id, name, kind, status, attempts, output, error, started_at, ended_at) VALUES
		 ('R1', 'fetch:1', 'fetch', 'run', 'Completed',
		  '[{"started_at":"2026-03-04T05:06:07.123456789Z","ended_at":"2026-03-04T05:06:08Z","error":"boom"},{"started_at":"2026-03-04T05:06:20Z","ended_at":"2026-03-04T05:06:21Z"}]',
		  '[1,2]', NULL, `+fmt.Sprint(ms)+`, `+fmt.Sprint(ms+14000)+`),
		 ('R1', 'count', 'count', 'run', 'Completed',
		  '[{"started_at":"2026-03-04T05:06:22Z","ended_at":"2026-03-04T05:06:23Z"}]', '7', NULL, `+fmt.Sprint(ms+15000)+`, `+fmt.Sprint(ms+16000)+`),
		 ('R3', 'approval', 'approval', 'waitForEvent', 'Waiting', '[]', NULL, NULL, `+fmt.Sprint(ms)+`, NULL)`,
		`UPDATE steps SET wait = '{"event":"blog/post.approved"}', wake_at = `+fmt.Sprint(ms+3600000)+` WHERE run_id = 'R3'`,
		`INSERT INTO waits (run_id, step_id, event_name, expires_at) VALUES ('R3', 'approval', 'blog/post.approved', `+fmt.Sprint(ms+3600000)+`)`,
	)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	clock := clockwork.NewFakeClockAt(t0.Add(time.Minute))
	s := openTest(t, path, clock)
	ctx := t.Context()

	// An event's own ts survives its new form, a lag behind the receipt
	// (0005_keyed_by_ulid.sql).
	for id, want := range map[string]int64{"E1": ms, "E3": ms - 7000} {
		e, err := s.GetEvent(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if e.TS != want || e.ReceivedAt.UnixMilli() != ms {
			t.Errorf("event %s: ts %d received %d, want ts %d received %d", id, e.TS, e.ReceivedAt.UnixMilli(), want, ms)
		}
	}
	for id, want := range map[string][]string{"R1": {"E1"}, "R2": {"E2", "E3"}, "R3": {"E1"}} {
		r, err := s.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.EventIDs, want) {
			t.Errorf("run %s: EventIDs = %v, want %v", id, r.EventIDs, want)
		}
	}
	for ev, want := range map[string][]string{"E1": {"R3", "R1"}, "E2": {"R2"}, "E3": {"R2"}} {
		p, err := s.ListRuns(ctx, store.RunFilter{EventID: ev})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range p.Items {
			got = append(got, r.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("runs of %s = %v, want %v", ev, got, want)
		}
	}
	var links int
	if err := s.rdb.QueryRowContext(ctx, "SELECT COUNT(*) FROM run_events").Scan(&links); err != nil || links != 2 {
		t.Errorf("run_events holds %d rows (%v), want 2: the debounced run's", links, err)
	}

	steps, err := s.Steps(ctx, "R1")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	want := []store.Step{
		{RunID: "R1", ID: "fetch:1", Name: "fetch", Kind: store.StepRun, Status: store.StatusCompleted,
			Attempts: []store.Attempt{
				{StartedAt: at("2026-03-04T05:06:07.123456789Z"), EndedAt: at("2026-03-04T05:06:08Z"), Error: "boom"},
				{StartedAt: at("2026-03-04T05:06:20Z"), EndedAt: at("2026-03-04T05:06:21Z")},
			},
			Output: json.RawMessage(`[1,2]`), StartedAt: t0, EndedAt: t0.Add(14 * time.Second)},
		{RunID: "R1", ID: "count", Name: "count", Kind: store.StepRun, Status: store.StatusCompleted,
			Attempts:  []store.Attempt{{StartedAt: at("2026-03-04T05:06:22Z"), EndedAt: at("2026-03-04T05:06:23Z")}},
			Output:    json.RawMessage(`7`),
			StartedAt: t0.Add(15 * time.Second), EndedAt: t0.Add(16 * time.Second)},
	}
	checkSteps(t, steps, want)

	// The pending wait survived the rebuild of steps: the event it waits
	// for completes it and wakes its run.
	if _, err := s.Publish(ctx, []store.Publication{{Event: event("blog/post.approved")}}); err != nil {
		t.Fatal(err)
	}
	steps, err = s.Steps(ctx, "R3")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].Status != store.StatusCompleted || steps[0].Kind != store.StepWait ||
		len(steps[0].Attempts) != 0 || !strings.Contains(string(steps[0].Output), "blog/post.approved") {
		t.Errorf("R3's steps after the awaited event: %+v", steps)
	}
	r3, err := s.GetRun(ctx, "R3")
	if err != nil {
		t.Fatal(err)
	}
	if r3.Status != store.StatusRunning || !r3.AvailableAt.Equal(clock.Now().Truncate(time.Millisecond)) {
		t.Errorf("R3 after its wait = %s available at %v, want Running now", r3.Status, r3.AvailableAt)
	}
}

func checkSteps(t *testing.T, got, want []store.Step) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("steps = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		same := g.RunID == w.RunID && g.ID == w.ID && g.Name == w.Name && g.Kind == w.Kind &&
			g.Status == w.Status && string(g.Output) == string(w.Output) && g.Error == w.Error &&
			g.StartedAt.Equal(w.StartedAt) && g.EndedAt.Equal(w.EndedAt) && len(g.Attempts) == len(w.Attempts)
		for j := 0; same && j < len(w.Attempts); j++ {
			same = g.Attempts[j].StartedAt.Equal(w.Attempts[j].StartedAt) &&
				g.Attempts[j].EndedAt.Equal(w.Attempts[j].EndedAt) && g.Attempts[j].Error == w.Attempts[j].Error
		}
		if !same {
			t.Errorf("step %d = %+v, want %+v", i, g, w)
		}
	}
}

// TestUsualStepStoresOnlyItsOwnFields checks the lean encoding of the
// usual step and of a run fed by one event: a Completed run step after one
// attempt stores no name, kind, status or attempts, and the run no event
// list and no run_events row, yet both read back whole.
func TestUsualStepStoresOnlyItsOwnFields(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	s := openTest(t, filepath.Join(t.TempDir(), "lean.db"), clock)
	ctx := t.Context()
	spec := store.RunSpec{ID: "01J0000000000000000000RUN1", FunctionID: "track-post-view"}
	pub, err := s.Publish(ctx, []store.Publication{{Event: event("blog/post.viewed"), Runs: []store.RunSpec{spec}}})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Claim = %v, %v", ls, err)
	}
	start := clock.Now().Add(1500 * time.Microsecond) // not a whole millisecond
	clock.Advance(3 * time.Millisecond)
	end := clock.Now()
	usual := store.Step{ID: "increment-views", Name: "increment-views", Kind: store.StepRun, Status: store.StatusCompleted,
		Attempts: []store.Attempt{{StartedAt: start, EndedAt: end}}, Output: json.RawMessage(`7`), StartedAt: start, EndedAt: end}
	retried := store.Step{ID: "notify:1", Name: "notify", Kind: store.StepRun, Status: store.StatusCompleted,
		Attempts: []store.Attempt{{StartedAt: t0, EndedAt: start, Error: "timeout"}, {StartedAt: start, EndedAt: end}},
		Output:   json.RawMessage(`true`), StartedAt: t0, EndedAt: end}
	for _, st := range []store.Step{usual, retried} {
		if err := s.SaveStep(ctx, &ls[0], st, nil); err != nil {
			t.Fatal(err)
		}
	}

	var lean bool
	if err := s.rdb.QueryRowContext(ctx, `SELECT name IS NULL AND kind IS NULL AND status IS NULL AND attempts IS NULL
  AND ended_at IS NULL AND duration = 2
FROM steps WHERE run = (SELECT n FROM runs WHERE id = ?) AND id = 'increment-views'`, spec.ID).Scan(&lean); err != nil || !lean {
		t.Errorf("the usual step stores its name, kind, status, attempts or end, or not its duration (%v)", err)
	}
	var eventIDs string
	var links int
	if err := s.rdb.QueryRowContext(ctx, `SELECT event_ids, (SELECT COUNT(*) FROM run_events) FROM runs WHERE id = ?`, spec.ID).
		Scan(&eventIDs, &links); err != nil || eventIDs != "" || links != 0 {
		t.Errorf("a run fed by one event stores event_ids %q and %d run_events rows (%v), want none", eventIDs, links, err)
	}

	// Events are keyed by their id alone, with no rowid and no second copy
	// of the id in a unique index (0005_keyed_by_ulid.sql). Runs have a
	// row number, and the step refers to its run by it, a small integer,
	// not by the 26-byte id (0006_runs_numbered.sql).
	var eventAutoIndexes, eventRowid int
	if err := s.rdb.QueryRowContext(ctx, `SELECT
  (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events' AND sql IS NULL),
  (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'events' AND sql NOT LIKE '%WITHOUT ROWID')`).
		Scan(&eventAutoIndexes, &eventRowid); err != nil || eventAutoIndexes != 0 || eventRowid != 0 {
		t.Errorf("events: %d automatic indexes, %d rowid tables (%v), want none", eventAutoIndexes, eventRowid, err)
	}
	var runRef string
	var runN int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT typeof(s.run), r.n FROM steps s JOIN runs r ON r.n = s.run
WHERE r.id = ? AND s.id = 'increment-views'`, spec.ID).Scan(&runRef, &runN); err != nil || runRef != "integer" || runN <= 0 {
		t.Errorf("the step refers to its run by a %q, run number %d (%v), want an integer", runRef, runN, err)
	}
	if cols, err := columns(ctx, s, "steps"); err != nil || slices.Contains(cols, "run_id") {
		t.Errorf("steps has the columns %q (%v): the run's id is kept in runs alone", cols, err)
	}
	var lag int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT ts_lag FROM events WHERE id = ?`, pub[0].EventID).Scan(&lag); err != nil || lag != 0 {
		t.Errorf("an event whose ts is its receipt stores a lag of %d (%v), want 0", lag, err)
	}

	steps, err := s.Steps(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Times are kept to the millisecond.
	ms := func(st store.Step) store.Step {
		st.RunID = spec.ID
		st.StartedAt, st.EndedAt = st.StartedAt.Truncate(time.Millisecond), st.EndedAt.Truncate(time.Millisecond)
		st.Attempts = slices.Clone(st.Attempts)
		for i, a := range st.Attempts {
			st.Attempts[i].StartedAt, st.Attempts[i].EndedAt = a.StartedAt.Truncate(time.Millisecond), a.EndedAt.Truncate(time.Millisecond)
		}
		return st
	}
	checkSteps(t, steps, []store.Step{ms(usual), ms(retried)})
	r, err := s.GetRun(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.EventIDs, []string{pub[0].EventID}) {
		t.Errorf("EventIDs = %v, want [%s]", r.EventIDs, pub[0].EventID)
	}
}

// columns lists the columns of a table of s.
func columns(ctx context.Context, s *Store, table string) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
