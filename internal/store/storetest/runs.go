package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var runCases = []testCase{
	{"CreatedQueued", pinned(testRunCreatedQueued)},
	{"GetRunUnknown", testGetRunUnknown},
	{"CreateRuns", testCreateRuns},
	{"ListRunsNewestFirstAndFilters", testListRunsFilters},
	{"ListRunsPaging", testListRunsPaging},
	{"ListRunsLimits", testListRunsLimits},
}

func testRunCreatedQueued(t *testing.T, b *bundle) {
	b.clock.Advance(time.Second)
	now := b.now()
	ev := b.event("app/created", `{}`)
	plain := b.spec("fn-a")
	past := b.spec("fn-a")
	past.AvailableAt = now.Add(-time.Hour)
	future := b.spec("fn-b")
	future.AvailableAt = now.Add(time.Hour)
	keyed := b.spec("fn-c")
	keyed.IdempotencyKey = "idem-1"
	keyed.IdempotencyTTL = time.Hour
	keyed.SingletonKey = "single-1"
	keyed.ConcurrencyKey = "conc-1"
	keyed.ConcurrencyLimit = 3
	keyed.FinishTimeout = 10 * time.Minute
	specs := []store.RunSpec{plain, past, future, keyed}

	p := b.publishOne(t, ev, specs...)
	if len(p.Runs) != len(specs) {
		t.Fatalf("Publish returned %d run refs, want %d", len(p.Runs), len(specs))
	}
	for i, s := range specs {
		checkRef(t, fmt.Sprintf("Runs[%d]", i), p.Runs[i], store.RunRef{ID: s.ID, FunctionID: s.FunctionID, Status: store.StatusQueued})
	}

	wantAvailable := []time.Time{now, now, now.Add(time.Hour), now}
	for i, s := range specs {
		r := b.getRun(t, s.ID)
		what := fmt.Sprintf("run %d: ", i)
		checkEqual(t, what+"ID", r.ID, s.ID)
		checkEqual(t, what+"FunctionID", r.FunctionID, s.FunctionID)
		checkEqual(t, what+"EventID", r.EventID, ev.ID)
		checkIDs(t, what+"EventIDs", r.EventIDs, []string{ev.ID})
		checkEqual(t, what+"Status", r.Status, store.StatusQueued)
		checkEqual(t, what+"Attempt", r.Attempt, 0)
		checkTime(t, what+"CreatedAt", r.CreatedAt, now)
		checkTime(t, what+"StartedAt", r.StartedAt, time.Time{})
		checkTime(t, what+"EndedAt", r.EndedAt, time.Time{})
		checkTime(t, what+"AvailableAt", r.AvailableAt, wantAvailable[i])
		checkTime(t, what+"FinishBy", r.FinishBy, time.Time{})
		checkEqual(t, what+"LeaseOwner", r.LeaseOwner, "")
		checkEqual(t, what+"Error", r.Error, "")
		if len(r.Output) != 0 && string(r.Output) != "null" {
			t.Errorf("%sOutput = %s, want none", what, r.Output)
		}
	}
	r := b.getRun(t, keyed.ID)
	checkEqual(t, "IdempotencyKey", r.IdempotencyKey, keyed.IdempotencyKey)
	checkEqual(t, "SingletonKey", r.SingletonKey, keyed.SingletonKey)
	checkEqual(t, "ConcurrencyKey", r.ConcurrencyKey, keyed.ConcurrencyKey)
	checkEqual(t, "ConcurrencyLimit", r.ConcurrencyLimit, keyed.ConcurrencyLimit)
	checkEqual(t, "FinishTimeout", r.FinishTimeout, keyed.FinishTimeout)
	if steps := b.steps(t, plain.ID); len(steps) != 0 {
		t.Errorf("Steps of a new run = %+v, want none", steps)
	}
}

func testGetRunUnknown(t *testing.T, b *bundle) {
	_, err := b.store.GetRun(b.ctx, b.id())
	wantErr(t, "GetRun(unknown)", err, store.ErrNotFound)
	_, err = b.store.GetRun(b.ctx, "no such run")
	wantErr(t, "GetRun(garbage)", err, store.ErrNotFound)
	// Decision: Steps of a run that does not exist is ErrNotFound (the
	// admin API answers 404), not an empty list.
	_, err = b.store.Steps(b.ctx, b.id())
	wantErr(t, "Steps(unknown run)", err, store.ErrNotFound)
}

func testCreateRuns(t *testing.T, b *bundle) {
	ev := b.event("app/rerun", `{"x":1}`)
	b.publishOne(t, ev)
	b.clock.Advance(time.Minute)

	s1, s2 := b.spec("fn-a"), b.spec("fn-b")
	s2.AvailableAt = b.now().Add(time.Minute)
	refs, err := b.store.CreateRuns(b.ctx, ev.ID, []store.RunSpec{s1, s2})
	if err != nil {
		t.Fatalf("CreateRuns: %v", err)
	}
	checkIDs(t, "CreateRuns refs", refIDs(refs), []string{s1.ID, s2.ID})
	for i, s := range []store.RunSpec{s1, s2} {
		checkRef(t, fmt.Sprintf("refs[%d]", i), refs[i], store.RunRef{ID: s.ID, FunctionID: s.FunctionID, Status: store.StatusQueued})
	}
	r := b.getRun(t, s1.ID)
	checkEqual(t, "EventID", r.EventID, ev.ID)
	checkIDs(t, "EventIDs", r.EventIDs, []string{ev.ID})
	checkTime(t, "CreatedAt", r.CreatedAt, b.now())
	checkTime(t, "AvailableAt", r.AvailableAt, b.now())
	checkTime(t, "AvailableAt (future)", b.getRun(t, s2.ID).AvailableAt, b.now().Add(time.Minute))
	checkIDs(t, "ListRuns by event", runIDs(b.allRuns(t, store.RunFilter{EventID: ev.ID})), []string{s2.ID, s1.ID})

	missing := b.spec("fn-a")
	_, err = b.store.CreateRuns(b.ctx, b.id(), []store.RunSpec{missing})
	wantErr(t, "CreateRuns(unknown event)", err, store.ErrNotFound)
	_, err = b.store.GetRun(b.ctx, missing.ID)
	wantErr(t, "GetRun(run of unknown event)", err, store.ErrNotFound)
}

func testListRunsFilters(t *testing.T, b *bundle) {
	// r0 fn-a t0, r1 fn-b t0+1s, r2 fn-a t0+2s (Completed),
	// r3 fn-a t0+3s (Running) and r3b fn-b t0+3s from one event e3,
	// r4 fn-b t0+4s. Only r2 and r3 are available at once.
	later := start.Add(time.Hour)
	mk := func(fn string, avail time.Time) store.RunSpec {
		s := b.spec(fn)
		s.AvailableAt = avail
		return s
	}
	at := make([]time.Time, 5)
	r0 := mk("fn-a", later)
	b.enqueue(t, r0)
	at[0] = b.now()
	b.clock.Advance(time.Second)
	r1 := mk("fn-b", later)
	b.enqueue(t, r1)
	at[1] = b.now()
	b.clock.Advance(time.Second)
	r2 := mk("fn-a", time.Time{})
	b.enqueue(t, r2)
	at[2] = b.now()
	b.complete(t, r2.ID)
	b.clock.Advance(time.Second)
	r3, r3b := mk("fn-a", time.Time{}), mk("fn-b", later)
	e3 := b.event("app/three", `{}`)
	b.publishOne(t, e3, r3, r3b)
	at[3] = b.now()
	b.claimOne(t, "w", r3.ID, time.Hour)
	b.clock.Advance(time.Second)
	r4 := mk("fn-b", later)
	b.enqueue(t, r4)
	at[4] = b.now()

	tests := []struct {
		name string
		f    store.RunFilter
		want []store.RunSpec
	}{
		// Decision: runs created at the same instant list newest first by id.
		{"all", store.RunFilter{}, []store.RunSpec{r4, r3b, r3, r2, r1, r0}},
		{"function", store.RunFilter{FunctionID: "fn-a"}, []store.RunSpec{r3, r2, r0}},
		{"unknown function", store.RunFilter{FunctionID: "fn-z"}, nil},
		{"queued", store.RunFilter{Statuses: []store.Status{store.StatusQueued}}, []store.RunSpec{r4, r3b, r1, r0}},
		{"completed or running", store.RunFilter{Statuses: []store.Status{store.StatusCompleted, store.StatusRunning}}, []store.RunSpec{r3, r2}},
		{"failed", store.RunFilter{Statuses: []store.Status{store.StatusFailed}}, nil},
		{"since (inclusive)", store.RunFilter{Since: at[2]}, []store.RunSpec{r4, r3b, r3, r2}},
		{"until (exclusive)", store.RunFilter{Until: at[2]}, []store.RunSpec{r1, r0}},
		{"since and until", store.RunFilter{Since: at[1], Until: at[4]}, []store.RunSpec{r3b, r3, r2, r1}},
		{"event", store.RunFilter{EventID: e3.ID}, []store.RunSpec{r3b, r3}},
		{"function and status", store.RunFilter{FunctionID: "fn-a", Statuses: []store.Status{store.StatusQueued}}, []store.RunSpec{r0}},
		{"function and event", store.RunFilter{FunctionID: "fn-b", EventID: e3.ID}, []store.RunSpec{r3b}},
	}
	for _, tt := range tests {
		var want []string
		for _, s := range tt.want {
			want = append(want, s.ID)
		}
		checkIDs(t, "ListRuns "+tt.name, runIDs(b.allRuns(t, tt.f)), want)
	}

	// Items carry the run, not just its id.
	p := b.listRuns(t, store.RunFilter{FunctionID: "fn-a", Limit: 2})
	if len(p.Items) != 2 {
		t.Fatalf("ListRuns limit 2 returned %d runs", len(p.Items))
	}
	checkEqual(t, "listed Status", p.Items[0].Status, store.StatusRunning)
	checkEqual(t, "listed EventID", p.Items[0].EventID, e3.ID)
	checkTime(t, "listed CreatedAt", p.Items[0].CreatedAt, at[3])
	checkEqual(t, "listed Status", p.Items[1].Status, store.StatusCompleted)
	if p.Cursor == "" {
		t.Fatalf("ListRuns limit 2 of 3 has no cursor")
	}
	p = b.listRuns(t, store.RunFilter{FunctionID: "fn-a", Limit: 2, Cursor: p.Cursor})
	checkIDs(t, "second page", runIDs(p.Items), []string{r0.ID})
	checkEqual(t, "second page cursor", p.Cursor, "")
}

func testListRunsPaging(t *testing.T, b *bundle) {
	// 30 runs of fn-a, several per instant, interleaved with fn-b runs.
	var want []string
	for i := range 10 {
		if i > 0 {
			b.clock.Advance(time.Millisecond)
		}
		specs := []store.RunSpec{b.spec("fn-a"), b.spec("fn-b"), b.spec("fn-a"), b.spec("fn-a")}
		b.enqueue(t, specs...)
		want = append(want, specs[0].ID, specs[2].ID, specs[3].ID)
	}
	want = reversed(want)
	// By function, and by function and status (every run is Queued): a
	// store may walk another index for each.
	for _, limit := range []int{1, 4, 7, 30, 100, -1, -4, -30} {
		f := store.RunFilter{FunctionID: "fn-a", Limit: limit}
		if limit < 0 {
			limit = -limit
			f = store.RunFilter{FunctionID: "fn-a", Statuses: []store.Status{store.StatusQueued}, Limit: limit}
		}
		var got []string
		for range 100 {
			p := b.listRuns(t, f)
			if len(p.Items) > limit {
				t.Fatalf("limit %d: page of %d runs", limit, len(p.Items))
			}
			got = append(got, runIDs(p.Items)...)
			if p.Cursor == "" {
				break
			}
			f.Cursor = p.Cursor
		}
		checkIDs(t, fmt.Sprintf("paged ListRuns with limit %d, statuses %v", limit, f.Statuses), got, want)
	}
}

func testListRunsLimits(t *testing.T, b *bundle) {
	specs := make([]store.RunSpec, 1001)
	for i := range specs {
		specs[i] = b.spec("fn-a")
	}
	b.enqueue(t, specs...)

	p := b.listRuns(t, store.RunFilter{})
	checkEqual(t, "default page size", len(p.Items), 50)
	if p.Cursor == "" {
		t.Errorf("default page of 1001 runs has no cursor")
	}
	p = b.listRuns(t, store.RunFilter{Limit: 5000})
	checkEqual(t, "page size with limit 5000", len(p.Items), 1000)
	if p.Cursor == "" {
		t.Fatalf("page of 1000 of 1001 runs has no cursor")
	}
	p = b.listRuns(t, store.RunFilter{Limit: 5000, Cursor: p.Cursor})
	checkIDs(t, "last page", runIDs(p.Items), []string{specs[0].ID})
	checkEqual(t, "last page cursor", p.Cursor, "")
}
