package redis_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestStepsRecordedInTheEarlierLayout: a run whose steps an earlier
// version recorded (steps:<run> as step id -> record with RFC 3339
// attempts, steporder:<run> as their order) is read, claimed, recorded
// further and pruned as before an upgrade.
func TestStepsRecordedInTheEarlierLayout(t *testing.T) {
	t.Parallel()
	s, runID, ls, clock, prefix, rdb := rawLeasedRun(t)
	ctx := t.Context()
	// What an earlier version wrote for two steps of this run.
	started := clock.Now().Add(-time.Second)
	legacy := func(id, name string) string {
		return fmt.Sprintf(`{"id":%q,"name":%q,"kind":"run","status":"Completed","attempts":[{"started_at":%q,"ended_at":%q}],"output":{"step":%q},"started_at":%d,"ended_at":%d}`,
			id, name, started.Format(time.RFC3339Nano), clock.Now().Format(time.RFC3339Nano), id, started.UnixMilli(), clock.Now().UnixMilli())
	}
	if err := rdb.HSet(ctx, prefix+"steps:"+runID, "b", legacy("b", "second"), "a", legacy("a", "a")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.RPush(ctx, prefix+"steporder:"+runID, "a", "b").Err(); err != nil {
		t.Fatal(err)
	}
	// That version started the run too: its start is a unix time, not ms
	// after its creation (layout 5's s).
	if err := rdb.HDel(ctx, prefix+"run:"+runID, "s").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, prefix+"run:"+runID, "started", started.UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	// Recorded further by this version: a third step, and the second again.
	now := clock.Now()
	for _, st := range []store.Step{
		{RunID: runID, ID: "c", Name: "c", Kind: store.StepRun, Status: store.StatusCompleted, Output: json.RawMessage(`{"step":"c"}`),
			Attempts: []store.Attempt{{StartedAt: now, EndedAt: now}}, StartedAt: now, EndedAt: now},
		{RunID: runID, ID: "b", Name: "second", Kind: store.StepRun, Status: store.StatusCompleted, Output: json.RawMessage(`{"step":"b2"}`),
			Attempts: []store.Attempt{{StartedAt: started, EndedAt: now}}, StartedAt: started, EndedAt: now},
	} {
		if err := s.SaveStep(ctx, &ls[0], st, nil); err != nil {
			t.Fatalf("SaveStep(%s): %v", st.ID, err)
		}
	}
	want := []string{`a a {"step":"a"}`, `b second {"step":"b2"}`, `c c {"step":"c"}`}
	describe := func(steps []store.Step) []string {
		var out []string
		for _, st := range steps {
			out = append(out, fmt.Sprintf("%s %s %s", st.ID, st.Name, st.Output))
			if len(st.Attempts) != 1 || st.Attempts[0].StartedAt.IsZero() {
				t.Errorf("step %s: attempts %+v", st.ID, st.Attempts)
			}
		}
		return out
	}
	steps, err := s.Steps(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if got := describe(steps); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Steps = %q, want %q", got, want)
	}
	if err := s.Release(ctx, &ls[0]); err != nil {
		t.Fatal(err)
	}
	ls, err = s.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Claim again: %v, %d leases", err, len(ls))
	}
	if got := describe(ls[0].Steps); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("claimed steps = %q, want %q", got, want)
	}
	if err := s.Finish(ctx, &ls[0], store.Outcome{Status: store.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if _, err := s.Prune(ctx, clock.Now(), 100); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, prefix+"steps:"+runID, prefix+"steporder:"+runID, prefix+"steplog:"+runID).Val(); n != 0 {
		t.Errorf("%d step keys of the pruned run are left", n)
	}
}

// TestStepRecordsWithLongNames: step records that earlier versions wrote
// into steplog:<run>, with long field names (kind, status, output,
// started_at, ended_at, always present) or short ones with an end and
// "once" (before durations), are read as before, next to the records this
// version writes; every kind of step round-trips through them, defaults
// and all.
func TestStepRecordsWithLongNames(t *testing.T) {
	t.Parallel()
	s, runID, ls, clock, prefix, rdb := rawLeasedRun(t)
	ctx := t.Context()
	now := clock.Now()
	start := now.Add(-time.Second)
	long := fmt.Sprintf("\n"+`{"id":"old","kind":"run","status":"Completed","once":true,"output":{"n":1},"started_at":%d,"ended_at":%d}`+
		"\n"+`{"id":"nap","kind":"sleep","status":"Sleeping","att":[{"s":%d,"e":%d}],"wake_at":%d,"started_at":%d}`+
		"\n"+`{"id":"short","once":true,"o":2,"s":%d,"e":%d}`+"\n"+`{"id":"instant","once":true,"o":3,"e":%d}`,
		start.UnixMilli(), now.UnixMilli(), start.UnixMilli(), start.UnixMilli(), now.Add(time.Hour).UnixMilli(), start.UnixMilli(),
		start.UnixMilli(), now.UnixMilli(), now.UnixMilli())
	if err := rdb.Set(ctx, prefix+"steplog:"+runID, long, 0).Err(); err != nil {
		t.Fatal(err)
	}
	ms := func(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }
	written := []store.Step{
		{RunID: runID, ID: "plain", Name: "plain", Kind: store.StepRun, Status: store.StatusCompleted, Output: json.RawMessage(`0`),
			Attempts: []store.Attempt{{StartedAt: ms(now), EndedAt: ms(now)}}, StartedAt: ms(now), EndedAt: ms(now)},
		{RunID: runID, ID: "retried", Name: "retried step", Kind: store.StepRun, Status: store.StatusFailed, Error: "boom",
			Attempts:  []store.Attempt{{StartedAt: ms(start), EndedAt: ms(start), Error: "boom"}, {StartedAt: ms(now), EndedAt: ms(now), Error: "boom"}},
			StartedAt: ms(start), EndedAt: ms(now)},
		{RunID: runID, ID: "wait", Name: "wait", Kind: store.StepWait, Status: store.StatusWaiting, WakeAt: ms(now.Add(time.Hour)),
			Attempts: []store.Attempt{}, StartedAt: ms(now), Wait: &store.Wait{Event: "test/go"}},
		{RunID: runID, ID: "slow", Name: "slow", Kind: store.StepRun, Status: store.StatusCompleted, Output: json.RawMessage(`1`),
			Attempts: []store.Attempt{{StartedAt: ms(start), EndedAt: ms(now)}}, StartedAt: ms(start), EndedAt: ms(now)},
		{RunID: runID, ID: "slept", Name: "slept", Kind: store.StepSleep, Status: store.StatusCompleted,
			Attempts: []store.Attempt{}, StartedAt: ms(start), EndedAt: ms(now)},
		{RunID: runID, ID: "late", Name: "late", Kind: store.StepRun, Status: store.StatusCompleted, Output: json.RawMessage(`4`),
			Attempts: []store.Attempt{{StartedAt: ms(now), EndedAt: ms(now)}}, StartedAt: ms(now)},
	}
	for _, st := range written {
		if err := s.SaveStep(ctx, &ls[0], st, nil); err != nil {
			t.Fatalf("SaveStep(%s): %v", st.ID, err)
		}
	}
	got, err := s.Steps(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	const earlier = 4 // records written before
	if len(got) != earlier+len(written) {
		t.Fatalf("%d steps, want %d: %+v", len(got), earlier+len(written), got)
	}
	if st := got[0]; st.ID != "old" || st.Kind != store.StepRun || st.Status != store.StatusCompleted ||
		string(st.Output) != `{"n":1}` || !st.StartedAt.Equal(ms(start)) || !st.EndedAt.Equal(ms(now)) || len(st.Attempts) != 1 {
		t.Errorf("the long record of a completed step reads %+v", st)
	}
	if st := got[1]; st.ID != "nap" || st.Kind != store.StepSleep || st.Status != store.StatusSleeping ||
		!st.WakeAt.Equal(ms(now.Add(time.Hour))) || !st.StartedAt.Equal(ms(start)) || !st.EndedAt.IsZero() {
		t.Errorf("the long record of a sleep reads %+v", st)
	}
	for i, st := range got[2:earlier] {
		want := []struct {
			id, out    string
			start, end time.Time
		}{{"short", "2", ms(start), ms(now)}, {"instant", "3", ms(now), ms(now)}}[i]
		if st.ID != want.id || st.Kind != store.StepRun || st.Status != store.StatusCompleted || string(st.Output) != want.out ||
			!st.StartedAt.Equal(want.start) || !st.EndedAt.Equal(want.end) ||
			fmt.Sprint(st.Attempts) != fmt.Sprint([]store.Attempt{{StartedAt: want.start, EndedAt: want.end}}) {
			t.Errorf("the record of %s written before durations reads %+v", want.id, st)
		}
	}
	for i, want := range written {
		st := got[earlier+i]
		if st.ID != want.ID || st.Name != want.Name || st.Kind != want.Kind || st.Status != want.Status ||
			string(st.Output) != string(want.Output) || st.Error != want.Error || !st.WakeAt.Equal(want.WakeAt) ||
			!st.StartedAt.Equal(want.StartedAt) || !st.EndedAt.Equal(want.EndedAt) ||
			fmt.Sprint(st.Attempts) != fmt.Sprint(want.Attempts) || fmt.Sprint(st.Wait) != fmt.Sprint(want.Wait) {
			t.Errorf("step %s reads\n%+v\nwant\n%+v", want.ID, st, want)
		}
	}
	// The usual step's record is short: no kind, status, name, attempts
	// or end; its start after the time of the run's id, and its duration.
	log := rdb.Get(ctx, prefix+"steplog:"+runID).Val()
	base := int64(ulid.MustParseStrict(runID).Time())
	short := map[string]string{
		`{"id":"plain"`: fmt.Sprintf(`{"id":"plain","o":0,"s":%d,"d":0}`, now.UnixMilli()-base),
		`{"id":"slow"`:  fmt.Sprintf(`{"id":"slow","o":1,"s":%d,"d":1000}`, start.UnixMilli()-base),
	}
	for _, line := range strings.Split(log, "\n") {
		for head, want := range short {
			if strings.HasPrefix(line, head) && line != want {
				t.Errorf("the usual step's record is %s, want %s", line, want)
			}
		}
	}
}

// leasedRun opens a store on srv's database 5 and returns it with the id
// of a run it stored and the lease a claim took on it.
func leasedRun(t *testing.T, srv *redistest.Server, clock clockwork.Clock) (*redis.Store, string, []store.Lease) {
	t.Helper()
	s := open(t, srv.URL(5), clock)
	runID := ulid.Make().String()
	if _, err := s.Publish(t.Context(), []store.Publication{{Event: store.Event{Name: "test/layout"},
		Runs: []store.RunSpec{{ID: runID, FunctionID: "layout"}}}}); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Claim(t.Context(), "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Claim: %v, %d leases", err, len(ls))
	}
	return s, runID, ls
}

// rawLeasedRun is leasedRun on a fresh server, with the run's engine
// prefix and a client of the database, to write keys as an earlier
// version did.
func rawLeasedRun(t *testing.T) (*redis.Store, string, []store.Lease, *clockwork.FakeClock, string, *goredis.Client) {
	t.Helper()
	srv := server(t)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC))
	s, runID, ls := leasedRun(t, srv, clock)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 5})
	t.Cleanup(func() { rdb.Close() })
	return s, runID, ls, clock, runKeyPrefix(t, srv.Addr, runID), rdb
}

// runKeyPrefix finds the engine prefix ("t7:{engine}:") of the run's key.
func runKeyPrefix(t *testing.T, addr, runID string) string {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, DB: 5})
	defer rdb.Close()
	keys, err := rdb.Keys(t.Context(), "*run:"+runID).Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("the run's key: %v %v", keys, err)
	}
	return strings.TrimSuffix(keys[0], "run:"+runID)
}

// TestStepLogReplacesInPlace: a step saved again replaces its record in
// the run's log and keeps its place, whatever its id holds (quotes, a
// newline, characters JSON escapes) and whichever other step's id it
// starts with.
func TestStepLogReplacesInPlace(t *testing.T) {
	t.Parallel()
	srv := server(t)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC))
	s, runID, ls := leasedRun(t, srv, clock)
	ctx := t.Context()
	ids := []string{"a", "a\"b\n<c>/&\u2028é", "a:1", `a\`, "a\"b"}
	save := func(id string, n int) {
		t.Helper()
		now := clock.Now()
		st := store.Step{RunID: runID, ID: id, Name: "name of " + id, Kind: store.StepRun, Status: store.StatusCompleted,
			Output: json.RawMessage(fmt.Sprintf(`{"n":%d,"text":"line\nbreak"}`, n)), Attempts: []store.Attempt{{StartedAt: now, EndedAt: now}},
			StartedAt: now, EndedAt: now}
		if err := s.SaveStep(ctx, &ls[0], st, nil); err != nil {
			t.Fatalf("SaveStep(%q): %v", id, err)
		}
	}
	for _, id := range ids {
		save(id, 1)
	}
	for i := len(ids) - 1; i >= 0; i-- {
		save(ids[i], 2+i)
	}
	steps, err := s.Steps(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != len(ids) {
		t.Fatalf("%d steps, want %d: %+v", len(steps), len(ids), steps)
	}
	for i, st := range steps {
		var out struct{ N int }
		if err := json.Unmarshal(st.Output, &out); err != nil {
			t.Fatal(err)
		}
		if st.ID != ids[i] || st.Name != "name of "+ids[i] || out.N != 2+i {
			t.Errorf("step %d = %q (%q) with n=%d, want %q with n=%d", i, st.ID, st.Name, out.N, ids[i], 2+i)
		}
	}
}

// TestEventsStoredInTheEarlierLayout: an event an earlier version stored
// (a hash {doc, name}) is read, listed, handed to the run it triggers and
// pruned as before an upgrade.
func TestEventsStoredInTheEarlierLayout(t *testing.T) {
	t.Parallel()
	srv := server(t)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC))
	s := open(t, srv.URL(5), clock)
	ctx := t.Context()
	runID := ulid.Make().String()
	pub, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/old", Data: json.RawMessage(`{"n":1}`)},
		Runs: []store.RunSpec{{ID: runID, FunctionID: "layout"}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := pub[0].EventID
	prefix := runKeyPrefix(t, srv.Addr, runID)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 5})
	defer rdb.Close()
	// Rewrite the event as an earlier version stored it: store.Event's
	// JSON, received at a time in ns, in a hash.
	key := prefix + "event:" + id
	if _, err := rdb.Get(ctx, key).Result(); err != nil {
		t.Fatalf("the event is not a string: %v", err)
	}
	received := clock.Now().Add(-1234567 * time.Nanosecond)
	legacyDoc, err := json.Marshal(store.Event{ID: id, Name: "test/old", Data: json.RawMessage(`{"n":"old"}`), TS: 42, ReceivedAt: received})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, key, "doc", legacyDoc, "name", "test/old").Err(); err != nil {
		t.Fatal(err)
	}
	ev, err := s.GetEvent(ctx, id)
	if err != nil || string(ev.Data) != `{"n":"old"}` || ev.ID != id || ev.TS != 42 || !ev.ReceivedAt.Equal(received) {
		t.Fatalf("GetEvent = %+v, %v", ev, err)
	}
	page, err := s.ListEvents(ctx, store.EventFilter{Name: "test/old"})
	if err != nil || len(page.Items) != 1 || string(page.Items[0].Data) != `{"n":"old"}` {
		t.Fatalf("ListEvents = %+v, %v", page.Items, err)
	}
	ls, err := s.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 || string(ls[0].Event.Data) != `{"n":"old"}` {
		t.Fatalf("Claim: %v, %+v", err, ls)
	}
	if err := s.Finish(ctx, &ls[0], store.Outcome{Status: store.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if _, err := s.Prune(ctx, clock.Now(), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetEvent(ctx, id); err == nil {
		t.Error("the event is left after Prune")
	}
	if n := rdb.ZCard(ctx, prefix+"events:name:test/old").Val(); n != 0 {
		t.Errorf("its name index holds %d entries after Prune", n)
	}
}

// keyspace is a keyspace of its own in one database of the shared server,
// written as an earlier version did (through rdb, under the engine prefix
// p) and opened by stores with opts.
type keyspace struct {
	url   string
	clock *clockwork.FakeClock
	opts  redis.Options
	rdb   *goredis.Client
	p     string
}

// newKeyspace is the keyspace of prefix name in database db.
func newKeyspace(t *testing.T, name string, db int) *keyspace {
	t.Helper()
	srv := server(t)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC))
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: db})
	t.Cleanup(func() { rdb.Close() })
	return &keyspace{url: srv.URL(db), clock: clock, rdb: rdb, p: name + ":{engine}:",
		opts: redis.Options{Clock: clock, Prefix: name + ":", SitePrefix: name + "-site:"}}
}

// open opens a store on k, closed when the test ends.
func (k *keyspace) open(t *testing.T) *redis.Store {
	t.Helper()
	s, err := redis.Open(t.Context(), k.url, k.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestUpgradeFromTheFirstLayout: a keyspace the first layout wrote (global
// run, event and status indexes; no registries of functions and event
// names) is listed in full by a store opened on it, which drops the
// global indexes, and is pruned.
func TestUpgradeFromTheFirstLayout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	k := newKeyspace(t, "upgrade1", 6)
	clock := k.clock
	old := k.open(t)
	var runs []string
	for i, fn := range []string{"a", "b", "c", "a", "b"} {
		id := ulid.Make().String()
		runs = append(runs, id)
		if _, err := old.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/" + fn, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))},
			Runs: []store.RunSpec{{ID: id, FunctionID: fn}}}}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Millisecond)
	}
	// Rewrite the keyspace as the first layout had it.
	rdb, p := k.rdb, k.p
	for _, fn := range rdb.SMembers(ctx, p+"fns").Val() {
		for _, m := range rdb.ZRange(ctx, p+"runs:fn:"+fn, 0, -1).Val() {
			rdb.ZAdd(ctx, p+"runs", goredis.Z{Member: m})
			rdb.ZAdd(ctx, p+"runs:st:Queued", goredis.Z{Member: m})
		}
	}
	for _, name := range rdb.SMembers(ctx, p+"names").Val() {
		for _, m := range rdb.ZRange(ctx, p+"events:name:"+name, 0, -1).Val() {
			rdb.ZAdd(ctx, p+"events", goredis.Z{Member: m})
		}
	}
	rdb.Del(ctx, p+"fns", p+"names", p+"layout")
	rdb.ZAdd(ctx, p+"ended", goredis.Z{Score: 1, Member: "a-run-of-layout-2"})

	s := k.open(t)
	var listed []string
	for cursor := ""; ; {
		page, err := s.ListRuns(ctx, store.RunFilter{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Items {
			listed = append(listed, r.ID)
		}
		if cursor = page.Cursor; cursor == "" {
			break
		}
	}
	if want := reversed(runs); strings.Join(listed, ",") != strings.Join(want, ",") {
		t.Errorf("runs listed %v, want %v (newest first)", listed, want)
	}
	queued, err := s.ListRuns(ctx, store.RunFilter{Statuses: []store.Status{store.StatusQueued}})
	if err != nil || len(queued.Items) != len(runs) {
		t.Errorf("queued runs: %d, %v; want %d", len(queued.Items), err, len(runs))
	}
	events, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil || len(events.Items) != len(runs) {
		t.Errorf("events: %d, %v; want %d", len(events.Items), err, len(runs))
	}
	if n := rdb.Exists(ctx, p+"runs", p+"events", p+"runs:st:Queued", p+"ended").Val(); n != 0 {
		t.Errorf("%d global indexes of the first two layouts are left", n)
	}
	if v := rdb.Get(ctx, p+"layout").Val(); v != redis.LayoutVersion {
		t.Errorf("layout = %q, want %s", v, redis.LayoutVersion)
	}
	// Every run ends; Prune then removes them, their events, and the
	// registries' entries.
	endNext(t, s, len(runs), store.StatusCompleted)
	clock.Advance(time.Hour)
	pruneAll(t, s, clock.Now())
	events, err = s.ListEvents(ctx, store.EventFilter{})
	if err != nil || len(events.Items) != 0 {
		t.Errorf("events after Prune: %d, %v", len(events.Items), err)
	}
	if n := rdb.SCard(ctx, p+"fns").Val() + rdb.SCard(ctx, p+"names").Val(); n != 0 {
		t.Errorf("%d registry entries are left after everything was pruned", n)
	}
}

// TestPruneWithoutTheEndedIndex: prune finds finished runs through their
// status indexes (layout 3 has no index by end time). It removes every
// run of each finished status that ended before the cutoff, leaves the
// run created before the cutoff that ended after it, and leaves the
// unfinished run; a keyspace of layout 2 loses its ended index when a
// store opens it.
func TestPruneWithoutTheEndedIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	k := newKeyspace(t, "prune3", 7)
	clock, rdb, p := k.clock, k.rdb, k.p
	rdb.Set(ctx, p+"layout", "2", 0)
	rdb.ZAdd(ctx, p+"ended", goredis.Z{Score: 1, Member: "a-run-of-layout-2"})
	s := k.open(t)
	if _, err := s.ListRuns(ctx, store.RunFilter{}); err != nil {
		t.Fatal(err)
	}
	if rdb.Exists(ctx, p+"ended").Val() != 0 || rdb.Get(ctx, p+"layout").Val() != redis.LayoutVersion {
		t.Fatalf("layout 2's ended index is left (layout %q)", rdb.Get(ctx, p+"layout").Val())
	}
	publish := func(fn string) string {
		id := ulid.Make().String()
		if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/prune"},
			Runs: []store.RunSpec{{ID: id, FunctionID: fn}}}}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	end := func(st store.Status) { endNext(t, s, 1, st) }
	var gone []string
	for _, st := range []store.Status{store.StatusCompleted, store.StatusFailed, store.StatusCompleted} {
		gone = append(gone, publish("f"))
		end(st)
	}
	cancelled := publish("g")
	if _, err := s.CancelRun(ctx, cancelled, "test"); err != nil {
		t.Fatal(err)
	}
	gone = append(gone, cancelled)
	late := publish("f")    // created before the cutoff, ended after it
	running := publish("g") // never ends
	clock.Advance(time.Hour)
	cutoff := clock.Now()
	end(store.StatusCompleted) // late
	clock.Advance(time.Minute)
	pruneAll(t, s, cutoff)
	for _, id := range gone {
		if _, err := s.GetRun(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("run %s ended before the cutoff: GetRun = %v, want not found", id, err)
		}
	}
	for _, id := range []string{late, running} {
		if _, err := s.GetRun(ctx, id); err != nil {
			t.Errorf("run %s is gone: %v", id, err)
		}
	}
}

// endNext claims the next n runs of s one at a time and ends each as st.
func endNext(t *testing.T, s *redis.Store, n int, st store.Status) {
	t.Helper()
	for range n {
		ls, err := s.Claim(t.Context(), "w", 1, time.Minute)
		if err != nil || len(ls) != 1 {
			t.Fatalf("Claim: %v %d", err, len(ls))
		}
		if err := s.Finish(t.Context(), &ls[0], store.Outcome{Status: st}); err != nil {
			t.Fatal(err)
		}
	}
}

// pruneAll prunes s with cutoff, two at a time, until nothing is left to.
func pruneAll(t *testing.T, s *redis.Store, cutoff time.Time) {
	t.Helper()
	for {
		n, err := s.Prune(t.Context(), cutoff, 2)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// TestUpgradeFromLayout3: layout 4 keeps an event's runs in its own string
// and status indexes only for Failed, Cancelled and Skipped runs. A
// keyspace layout 3 wrote (events of JSON alone with their runs in
// runs:ev:<event>, and an index of every status) is read by a store
// opened on it: an event's runs, old and new, are listed, Completed and
// Queued runs are listed without their indexes (which the upgrade drops),
// and prune removes the events with their runs:ev sets. A view the new
// layout records writes neither key.
func TestUpgradeFromLayout3(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	k := newKeyspace(t, "upgrade3", 8)
	clock, rdb, p := k.clock, k.rdb, k.p
	s := k.open(t)
	runOf := map[string]string{} // run id -> event id
	var events []string
	for i, fn := range []string{"a", "b", "a"} {
		id := ulid.Make().String()
		pub, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/up", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))},
			Runs: []store.RunSpec{{ID: id, FunctionID: fn}}}})
		if err != nil {
			t.Fatal(err)
		}
		runOf[id] = pub[0].EventID
		events = append(events, pub[0].EventID)
		clock.Advance(time.Millisecond)
	}
	endNext(t, s, len(runOf), store.StatusCompleted)
	// The new layout wrote no runs:ev set and no index of Completed runs.
	for _, pattern := range []string{p + "runs:ev:*", p + "runs:fnst:*"} {
		if keys := rdb.Keys(ctx, pattern).Val(); len(keys) != 0 {
			t.Errorf("layout 4 wrote %v", keys)
		}
	}
	// Rewrite the keyspace as layout 3 had it.
	for run, ev := range runOf {
		v := rdb.Get(ctx, p+"event:"+ev).Val()
		compact, runs, ok := strings.Cut(v, "\n")
		if strings.Contains(compact, "internal_id") || strings.Contains(compact, "received_at") {
			t.Errorf("layout 4 stored the event as %s, with what its key and ts hold", compact)
		}
		if !ok || runs != run {
			t.Fatalf("event %s holds %q after its JSON, want its run %s", ev, runs, run)
		}
		stored, err := s.GetEvent(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		stored.ReceivedAt = stored.ReceivedAt.Add(time.Microsecond) // layout 3 kept ns
		doc, err := json.Marshal(stored)
		if err != nil {
			t.Fatal(err)
		}
		rdb.Set(ctx, p+"event:"+ev, doc, 0)
		if again, err := s.GetEvent(ctx, ev); err != nil || !again.ReceivedAt.Equal(stored.ReceivedAt) || again.ID != ev || string(again.Data) != string(stored.Data) {
			t.Errorf("event of layout 3 read as %+v, %v; want %+v", again, err, stored)
		}
		r, err := s.GetRun(ctx, run)
		if err != nil {
			t.Fatal(err)
		}
		m := fmt.Sprintf("%013d:%s", r.CreatedAt.UnixMilli(), run)
		rdb.ZAdd(ctx, p+"runs:ev:"+ev, goredis.Z{Member: m})
		rdb.ZAdd(ctx, p+"runs:fnst:"+r.FunctionID+":Completed", goredis.Z{Member: m})
	}
	rdb.ZAdd(ctx, p+"runs:fnst:b:Queued", goredis.Z{Member: "0000000000001:a-queued-run"})
	rdb.ZAdd(ctx, p+"runs:fnst:b:Failed", goredis.Z{Member: "0000000000001:a-failed-run"})
	rdb.Set(ctx, p+"layout", "3", 0)

	s2 := k.open(t)
	if n := rdb.Exists(ctx, p+"runs:fnst:a:Completed", p+"runs:fnst:b:Completed", p+"runs:fnst:b:Queued").Val(); n != 0 || rdb.Get(ctx, p+"layout").Val() != redis.LayoutVersion {
		t.Errorf("after the upgrade: %d indexes of Completed and Queued runs left, layout %q", n, rdb.Get(ctx, p+"layout").Val())
	}
	if rdb.Exists(ctx, p+"runs:fnst:b:Failed").Val() != 1 {
		t.Error("the upgrade dropped the index of Failed runs")
	}
	rdb.Del(ctx, p+"runs:fnst:b:Failed")
	// An old event gets a second run now: both are its runs, newest first.
	clock.Advance(time.Second)
	rerun := ulid.Make().String()
	if _, err := s2.CreateRuns(ctx, events[0], []store.RunSpec{{ID: rerun, FunctionID: "b"}}); err != nil {
		t.Fatal(err)
	}
	var first string
	for run, ev := range runOf {
		if ev == events[0] {
			first = run
		}
	}
	ids := func(page store.Page[store.Run], err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range page.Items {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	if got, want := ids(s2.ListRuns(ctx, store.RunFilter{EventID: events[0]})), rerun+","+first; got != want {
		t.Errorf("runs of the old event = %s, want %s", got, want)
	}
	page, err := s2.ListRuns(ctx, store.RunFilter{EventID: events[0], Limit: 1})
	if got := ids(page, err); got != rerun || page.Cursor == "" {
		t.Fatalf("first page of one = %s (cursor %q), want %s", got, page.Cursor, rerun)
	}
	if got := ids(s2.ListRuns(ctx, store.RunFilter{EventID: events[0], Limit: 1, Cursor: page.Cursor})); got != first {
		t.Errorf("second page of one = %s, want %s", got, first)
	}
	completed := map[store.Status]int{}
	for _, f := range []store.RunFilter{{Statuses: []store.Status{store.StatusCompleted}}, {FunctionID: "a", Statuses: []store.Status{store.StatusCompleted}}} {
		page, err := s2.ListRuns(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Items {
			completed[r.Status]++
		}
	}
	if completed[store.StatusCompleted] != 3+2 || len(completed) != 1 {
		t.Errorf("Completed runs listed: %v, want 3 of every function and 2 of a, all Completed", completed)
	}
	queued, err := s2.ListRuns(ctx, store.RunFilter{FunctionID: "b", Statuses: []store.Status{store.StatusQueued}})
	if got := ids(queued, err); got != rerun {
		t.Errorf("queued runs of b = %s, want %s", got, rerun)
	}
	// Every run ends; prune removes every event with its runs:ev set.
	endNext(t, s2, 1, store.StatusCompleted)
	clock.Advance(time.Hour)
	pruneAll(t, s2, clock.Now())
	if keys := rdb.Keys(ctx, p+"*").Val(); len(keys) != 1 || keys[0] != p+"layout" {
		t.Errorf("keys left after everything was pruned: %v", keys)
	}
}

// TestLongOutputsKeepTheRunCompact: a run's output or error longer than
// 64 bytes is stored in parts, so the run hash stays a listpack (one value
// over Redis's hash-max-listpack-value would make it a hash table of some
// 500 bytes more). Every length, cut inside a UTF-8 character or not,
// reads back exactly; a value past 64 parts is stored whole.
func TestLongOutputsKeepTheRunCompact(t *testing.T) {
	t.Parallel()
	srv := server(t)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC))
	ctx := t.Context()
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 5})
	defer rdb.Close()
	for _, n := range []int{10, 62, 63, 64, 65, 73, 500, 4096, 4097} {
		for _, st := range []store.Status{store.StatusCompleted, store.StatusFailed} {
			s, runID, ls := leasedRun(t, srv, clock)
			// A JSON string of n bytes whose 64-byte parts cut an "é" in two.
			text := `"` + strings.Repeat("é", (n-2)/2) + strings.Repeat("a", (n-2)%2) + `"`
			o := store.Outcome{Status: st, Output: json.RawMessage(text)}
			if st == store.StatusFailed {
				o = store.Outcome{Status: st, Error: text}
			}
			if err := s.Finish(ctx, &ls[0], o); err != nil {
				t.Fatal(err)
			}
			r, err := s.GetRun(ctx, runID)
			if err != nil {
				t.Fatal(err)
			}
			got := string(r.Output)
			if st == store.StatusFailed {
				got = r.Error
			}
			if got != text {
				t.Errorf("%s run, %d bytes: read back %d bytes", st, n, len(got))
			}
			enc := rdb.ObjectEncoding(ctx, runKeyPrefix(t, srv.Addr, runID)+"run:"+runID).Val()
			if compact := enc == "listpack" || enc == "ziplist"; compact != (n <= 4096) {
				t.Errorf("%s run, %d bytes: the run hash is a %s", st, n, enc)
			}
			page, err := s.ListRuns(ctx, store.RunFilter{FunctionID: "layout", Statuses: []store.Status{st}})
			if err != nil || len(page.Items) != 1 || string(page.Items[0].Output)+page.Items[0].Error != text {
				t.Errorf("%s run, %d bytes: listed %d runs, %v", st, n, len(page.Items), err)
			}
		}
	}
}

// TestUnfinishedRunsPastALongQueue: a listing of unfinished statuses reads
// the queue's runs while the queue is short, and walks the function
// indexes past a longer one; both give the same pages. Not parallel: it
// sets the store's limit.
func TestUnfinishedRunsPastALongQueue(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC))
	s := open(t, srv.URL(9), clock)
	var all, ofA []string                                                    // queued, newest first
	for i, fn := range []string{"done", "a", "b", "a", "a", "b", "a", "a"} { // "done" is claimed first
		id := ulid.Make().String()
		if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/long", Data: json.RawMessage(fmt.Sprint(i))},
			Runs: []store.RunSpec{{ID: id, FunctionID: fn}}}}); err != nil {
			t.Fatal(err)
		}
		if fn == "done" {
			endNext(t, s, 1, store.StatusCompleted)
		} else {
			all = append([]string{id}, all...)
			if fn == "a" {
				ofA = append([]string{id}, ofA...)
			}
		}
		clock.Advance(time.Millisecond)
	}
	queued := []store.Status{store.StatusQueued}
	for _, limit := range []int64{20000, 3} {
		redis.SetMaxQueueList(t, limit)
		for _, tc := range []struct {
			f    store.RunFilter
			want []string
		}{
			{store.RunFilter{Statuses: queued, Limit: 2}, all},
			{store.RunFilter{FunctionID: "a", Statuses: queued, Limit: 2}, ofA},
			{store.RunFilter{FunctionID: "a", Statuses: []store.Status{store.StatusQueued, store.StatusRunning}, Limit: 3}, ofA},
		} {
			var got []string
			for f := tc.f; ; {
				page, err := s.ListRuns(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range page.Items {
					got = append(got, r.ID)
				}
				if f.Cursor = page.Cursor; f.Cursor == "" {
					break
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("queue limit %d, %+v: listed %v, want %v", limit, tc.f, got, tc.want)
			}
		}
	}
}

// TestPruneGoesPastManyUnfinishedRuns: Completed runs have no status
// index, so prune walks their function's index, where unfinished runs
// (here 6 000 long sleepers, more than one prune call scans) come first.
// Each call goes on where the last stopped, so the Completed runs behind
// them are pruned within a few calls, and the sleepers stay.
func TestPruneGoesPastManyUnfinishedRuns(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC))
	s := open(t, srv.URL(10), clock)
	var sleepers []string
	for range 6 {
		pubs := make([]store.Publication, 1000)
		for i := range pubs {
			id := ulid.Make().String()
			sleepers = append(sleepers, id)
			pubs[i] = store.Publication{Event: store.Event{Name: "test/sleep"},
				Runs: []store.RunSpec{{ID: id, FunctionID: "drip", AvailableAt: clock.Now().Add(90 * 24 * time.Hour)}}}
		}
		if _, err := s.Publish(ctx, pubs); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Millisecond)
	var done []string
	for range 3 {
		id := ulid.Make().String()
		done = append(done, id)
		if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/sleep"},
			Runs: []store.RunSpec{{ID: id, FunctionID: "drip"}}}}); err != nil {
			t.Fatal(err)
		}
		endNext(t, s, 1, store.StatusCompleted)
	}
	clock.Advance(31 * 24 * time.Hour)
	cutoff := clock.Now().Add(-30 * 24 * time.Hour)
	calls := 0
	for ; calls < 5; calls++ {
		if _, err := s.Prune(ctx, cutoff, 500); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetRun(ctx, done[2]); errors.Is(err, store.ErrNotFound) {
			break
		}
	}
	for _, id := range done {
		if _, err := s.GetRun(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Completed run %s is left after %d prune calls: %v", id, calls, err)
		}
	}
	for _, id := range []string{sleepers[0], sleepers[len(sleepers)-1]} {
		if _, err := s.GetRun(ctx, id); err != nil {
			t.Errorf("unfinished run %s: %v", id, err)
		}
	}
}

// TestEventStoredWithoutItsTS: an event whose ts is the time of its id, as
// the engine gives an event sent without a ts, is stored without it (20
// bytes of a page view's event); any other ts is stored. Both read back.
func TestEventStoredWithoutItsTS(t *testing.T) {
	t.Parallel()
	s, _, _, clock, prefix, rdb := rawLeasedRun(t)
	ctx := t.Context()
	now := clock.Now()
	stamped := store.Event{ID: ulid.MustNew(ulid.Timestamp(now), rand.Reader).String(), Name: "blog/post.viewed",
		Data: json.RawMessage(`{"slug":"a"}`), TS: now.UnixMilli()}
	sent := store.Event{ID: ulid.MustNew(ulid.Timestamp(now), rand.Reader).String(), Name: "blog/post.viewed",
		Data: json.RawMessage(`{"slug":"b"}`), TS: now.UnixMilli() - 5000}
	if _, err := s.Publish(ctx, []store.Publication{{Event: stamped}, {Event: sent}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ev   store.Event
		want string
	}{
		{stamped, `{"name":"blog/post.viewed","data":{"slug":"a"}}`},
		{sent, fmt.Sprintf(`{"name":"blog/post.viewed","data":{"slug":"b"},"ts":%d,"r":5000}`, sent.TS)},
	} {
		if got := rdb.Get(ctx, prefix+"event:"+c.ev.ID).Val(); got != c.want {
			t.Errorf("event %s is stored as %s, want %s", c.ev.ID, got, c.want)
		}
		got, err := s.GetEvent(ctx, c.ev.ID)
		if err != nil || got.TS != c.ev.TS || !got.ReceivedAt.Equal(now) {
			t.Errorf("event %s reads ts %d, received %v (%v), want %d, %v", c.ev.ID, got.TS, got.ReceivedAt, err, c.ev.TS, now)
		}
	}
}

// TestRunTimesAfterCreation: a run stores its start and end as ms after
// its creation ("s", "d"), where it stored two unix times ("started",
// "ended"); a run written so before is read, listed as unfinished until it
// ends, and pruned once it ended before the cutoff, as before.
func TestRunTimesAfterCreation(t *testing.T) {
	t.Parallel()
	s, runID, ls, clock, prefix, rdb := rawLeasedRun(t)
	ctx := t.Context()
	created := clock.Now()
	clock.Advance(3 * time.Millisecond)
	if err := s.Finish(ctx, &ls[0], store.Outcome{Status: store.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	h := rdb.HGetAll(ctx, prefix+"run:"+runID).Val()
	if h["s"] != "0" || h["d"] != "3" || h["started"] != "" || h["ended"] != "" {
		t.Errorf("the run's hash holds s=%q d=%q started=%q ended=%q, want s=0 d=3 and no unix times",
			h["s"], h["d"], h["started"], h["ended"])
	}
	r, err := s.GetRun(ctx, runID)
	if err != nil || !r.StartedAt.Equal(created) || !r.EndedAt.Equal(created.Add(3*time.Millisecond)) {
		t.Errorf("GetRun: started %v, ended %v (%v), want %v and 3ms later", r.StartedAt, r.EndedAt, err, created)
	}

	// A hash as the version before wrote it: unix times, unfinished, then
	// ended an hour before a prune's cutoff.
	if err := rdb.HDel(ctx, prefix+"run:"+runID, "s", "d").Err(); err != nil {
		t.Fatal(err)
	}
	started := created.Add(time.Millisecond)
	if err := rdb.HSet(ctx, prefix+"run:"+runID, "started", started.UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetRun(ctx, runID); err != nil || !r.StartedAt.Equal(started) || !r.EndedAt.IsZero() {
		t.Errorf("an earlier unfinished run reads started %v, ended %v (%v), want %v and no end", r.StartedAt, r.EndedAt, err, started)
	}
	clock.Advance(2 * time.Hour)
	if n, err := s.Prune(ctx, clock.Now().Add(-time.Hour), 100); err != nil || n != 0 {
		t.Errorf("Prune of an earlier unfinished run: %d removed (%v), want 0", n, err)
	}
	ended := created.Add(5 * time.Millisecond)
	if err := rdb.HSet(ctx, prefix+"run:"+runID, "ended", ended.UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetRun(ctx, runID); err != nil || !r.StartedAt.Equal(started) || !r.EndedAt.Equal(ended) {
		t.Errorf("an earlier finished run reads started %v, ended %v (%v), want %v and %v", r.StartedAt, r.EndedAt, err, started, ended)
	}
	if _, err := s.Prune(ctx, clock.Now().Add(-time.Hour), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRun(ctx, runID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun of an earlier run that ended before the cutoff, after Prune: %v, want ErrNotFound", err)
	}
}

// TestLaterLayoutIsRefused: a keyspace marked with a layout later than
// this version's is refused at Open, with an error that says so, and its
// mark is left as it was; a layout 4 keyspace, whose records this version
// reads as they are, is only marked with this version's layout.
func TestLaterLayoutIsRefused(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 5})
	t.Cleanup(func() { rdb.Close() })
	n := nextID.Add(1)
	prefix := fmt.Sprintf("t%d:", n)
	later := strconv.Itoa(layoutNumber(t) + 1)
	if err := rdb.Set(ctx, prefix+"{engine}:layout", later, 0).Err(); err != nil {
		t.Fatal(err)
	}
	s, err := redis.Open(ctx, srv.URL(5), redis.Options{Prefix: prefix, SitePrefix: prefix + "site:"})
	if err == nil {
		s.Close()
		t.Fatalf("Open of a keyspace of layout %s succeeded", later)
	}
	if !strings.Contains(err.Error(), "later layout") || !strings.Contains(err.Error(), "layout "+later) {
		t.Errorf("Open of a keyspace of layout %s: %v, want it to name the later layout", later, err)
	}
	if v := rdb.Get(ctx, prefix+"{engine}:layout").Val(); v != later {
		t.Errorf("the refused keyspace's layout became %q", v)
	}

	prefix = fmt.Sprintf("t%d:", nextID.Add(1))
	if err := rdb.Set(ctx, prefix+"{engine}:layout", "4", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s, err = redis.Open(ctx, srv.URL(5), redis.Options{Prefix: prefix, SitePrefix: prefix + "site:"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if v := rdb.Get(ctx, prefix+"{engine}:layout").Val(); v != redis.LayoutVersion {
		t.Errorf("a layout 4 keyspace is marked %q after Open, want %s", v, redis.LayoutVersion)
	}
}

// layoutNumber is the layout this version writes, as a number.
func layoutNumber(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(redis.LayoutVersion)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
