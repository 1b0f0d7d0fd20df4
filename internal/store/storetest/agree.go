package storetest

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// agreeCases pin the points where SQLite and Redis once disagreed; the
// argument rules they share live in store/validate.go.
var agreeCases = []testCase{
	{"StepOutputMustBeJSON", testStepOutputMustBeJSON},
	{"StepWaitArguments", testStepWaitArguments},
	{"WaitMatchesByJSONValue", testWaitMatchesByJSONValue},
	{"ClaimChecksTTLFirst", testClaimChecksTTLFirst},
	{"KeyTTLNegativeRefused", testKeyTTLNegative},
	{"IncrByOverflow", testIncrByOverflow},
	{"ScanDefaultCount", testScanDefaultCount},
	{"ScanUnicodeAndPatternKeys", testScanUnicodeAndPatternKeys},
	{"ListDefaultAndMaxLimit", testListDefaultAndMaxLimit},
	{"CancelFinishedRun", testCancelFinishedRun},
	{"EventWithoutData", testEventWithoutData},
	{"CursorOfAnotherListing", testCursorOfAnotherListing},
}

// testStepOutputMustBeJSON: SQLite stored a step output that is not JSON,
// Redis refused it. Decision: ErrInvalid, and nothing is recorded.
func testStepOutputMustBeJSON(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	for _, out := range []string{`{"a":`, `hello`, `'x'`} {
		st := b.doneStep(l, "bad")
		st.Output = json.RawMessage(out)
		wantErr(t, "SaveStep with output "+out, b.store.SaveStep(b.ctx, l, st, nil), store.ErrInvalid)
	}
	checkEqual(t, "steps after refused saves", len(b.steps(t, id)), 0)
	st := b.doneStep(l, "empty")
	st.Output = nil
	b.saveStep(t, l, st)
	checkEqual(t, "steps after a save without output", len(b.steps(t, id)), 1)
}

// testStepWaitArguments: a wait needs an event name, a valid path and a
// JSON match value.
func testStepWaitArguments(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	for name, w := range map[string]store.Wait{
		"no event":           {MatchPath: "data.id", MatchValue: json.RawMessage(`1`)},
		"bad path":           {Event: "app/x", MatchPath: "data..id", MatchValue: json.RawMessage(`1`)},
		"value not JSON":     {Event: "app/x", MatchPath: "data.id", MatchValue: json.RawMessage(`{`)},
		"path with no value": {Event: "app/x", MatchPath: "data.id"},
	} {
		st := store.Step{ID: "approval", Name: "approval", Kind: store.StepWait, Status: store.StatusWaiting,
			WakeAt: b.now().Add(time.Hour), StartedAt: b.now(), Wait: &w}
		wantErr(t, "SaveStep with a wait with "+name, b.store.SaveStep(b.ctx, l, st, nil), store.ErrInvalid)
	}
	wantErr(t, "SaveStep without an id", b.store.SaveStep(b.ctx, l, store.Step{Status: store.StatusCompleted}, nil), store.ErrInvalid)
	checkEqual(t, "steps after refused saves", len(b.steps(t, id)), 0)
}

// testWaitMatchesByJSONValue: Redis compared decoded values, SQLite the
// text. Decision: JSON value semantics (store.SameJSON) on both: key order,
// number spelling and string escapes do not matter; types do.
func testWaitMatchesByJSONValue(t *testing.T, b *bundle) {
	tests := []struct {
		want  string
		miss  []string
		match string
	}{
		{`{"a":1,"b":2}`, []string{`{"a":1}`, `{"a":1,"b":3}`, `[1,2]`}, `{"b":2,"a":1}`},
		{`{ "a" : [1, {"c": "d"}] }`, []string{`{"a":[{"c":"d"},1]}`}, `{"a":[1.0,{"c":"d"}]}`},
		{`1`, []string{`"1"`, `true`, `2`}, `1.0`},
		{`1.5`, []string{`15e-2`}, `15e-1`},
		{`100`, []string{`"100"`}, `1e2`},
		{`"A"`, []string{`"a"`, `65`}, `"\u0041"`},
		{`true`, []string{`1`, `"true"`}, `true`},
		{`[]`, []string{`[0]`, `""`}, `[]`},
	}
	for i, tt := range tests {
		name := fmt.Sprintf("app/v%d", i)
		id, _ := b.waitFor(t, store.Wait{Event: name, MatchPath: "data.v", MatchValue: json.RawMessage(tt.want)}, time.Hour)
		for _, m := range tt.miss {
			b.publishOne(t, b.event(name, `{"v":`+m+`}`))
			checkEqual(t, fmt.Sprintf("wait for %s after %s", tt.want, m), b.waitStep(t, id).Status, store.StatusWaiting)
		}
		data := `{"v":` + tt.match + `}`
		b.publishOne(t, b.event(name, data))
		checkWaitOutput(t, b.waitStep(t, id), name, data)
		b.finish(t, b.claimOne(t, "w", id, time.Hour), store.Outcome{Status: store.StatusCompleted})
	}
}

// testClaimChecksTTLFirst: SQLite answered Claim(n 0, ttl 0) with nothing,
// Redis with ErrInvalid. Decision: the ttl is checked first, whatever n.
func testClaimChecksTTLFirst(t *testing.T, b *bundle) {
	for _, n := range []int{0, -1, 1} {
		_, err := b.store.Claim(b.ctx, "w", n, 0)
		wantErr(t, fmt.Sprintf("Claim(%d, ttl 0)", n), err, store.ErrInvalid)
		_, err = b.store.Claim(b.ctx, "w", n, -time.Second)
		wantErr(t, fmt.Sprintf("Claim(%d, ttl -1s)", n), err, store.ErrInvalid)
	}
	b.enqueueOne(t, "fn-a")
	if ls := b.claim(t, "w", 0, time.Minute); len(ls) != 0 {
		t.Errorf("Claim(0) = %v, want nothing", leaseIDs(ls))
	}
}

// testKeyTTLNegative: both stored a key with a negative ttl forever.
// Decision: a negative ttl is ErrInvalid and writes nothing.
func testKeyTTLNegative(t *testing.T, b *bundle) {
	ttl := -time.Second
	wantErr(t, "Set", b.store.Set(b.ctx, "k", "v", ttl), store.ErrInvalid)
	_, err := b.store.SetNX(b.ctx, "k", "v", ttl)
	wantErr(t, "SetNX", err, store.ErrInvalid)
	_, err = b.store.IncrBy(b.ctx, "k", 1, ttl)
	wantErr(t, "IncrBy", err, store.ErrInvalid)
	_, err = b.store.SetAdd(b.ctx, "k", ttl, "m")
	wantErr(t, "SetAdd", err, store.ErrInvalid)
	_, err = b.store.Get(b.ctx, "k")
	wantErr(t, "Get after refused writes", err, store.ErrNotFound)
}

// testIncrByOverflow: SQLite refused an overflowing increment with
// ErrInvalid, Redis with an unmapped error. Decision: ErrInvalid, value kept.
func testIncrByOverflow(t *testing.T, b *bundle) {
	b.incr(t, "n", math.MaxInt64-1, 0)
	_, err := b.store.IncrBy(b.ctx, "n", 2, 0)
	wantErr(t, "IncrBy past MaxInt64", err, store.ErrInvalid)
	checkEqual(t, "value after the refused IncrBy", b.kvGet(t, "n"), fmt.Sprint(int64(math.MaxInt64-1)))
	b.incr(t, "m", math.MinInt64+1, 0)
	_, err = b.store.IncrBy(b.ctx, "m", -2, 0)
	wantErr(t, "IncrBy past MinInt64", err, store.ErrInvalid)
}

// testScanDefaultCount: a count of 0 served 10 keys on SQLite, 100 on
// Redis. Decision: store.DefaultScanCount.
func testScanDefaultCount(t *testing.T, b *bundle) {
	for i := range store.DefaultScanCount + 5 {
		b.kvSet(t, fmt.Sprintf("k:%04d", i), "v", 0)
	}
	for _, count := range []int{0, -1} {
		keys, next, err := b.store.Scan(b.ctx, "k:", "", count)
		if err != nil {
			t.Fatal(err)
		}
		checkEqual(t, fmt.Sprintf("len(Scan(count %d))", count), len(keys), store.DefaultScanCount)
		checkEqual(t, "next", next, keys[len(keys)-1])
	}
}

// testScanUnicodeAndPatternKeys: keys are bytes, in byte order; glob and
// LIKE characters are literal.
func testScanUnicodeAndPatternKeys(t *testing.T, b *bundle) {
	keys := []string{"é:1", "e:1", "ß", "日本:1", "a*b", "a?b", "a[1]", "a\\b", "a%b", "a_b"}
	for _, k := range keys {
		b.kvSet(t, k, "v", 0)
		checkEqual(t, "Get("+k+")", b.kvGet(t, k), "v")
	}
	checkIDs(t, "Scan(all)", b.scanAll(t, "", 3), []string{"a%b", "a*b", "a?b", "a[1]", "a\\b", "a_b", "e:1", "ß", "é:1", "日本:1"})
	checkIDs(t, "Scan(a*)", b.scanAll(t, "a*", 3), []string{"a*b"})
	checkIDs(t, "Scan(a[)", b.scanAll(t, "a[", 3), []string{"a[1]"})
	checkIDs(t, "Scan(é)", b.scanAll(t, "é", 3), []string{"é:1"})
	checkIDs(t, "Scan(日本)", b.scanAll(t, "日本", 3), []string{"日本:1"})
}

// testListDefaultAndMaxLimit: one rule for page sizes (store.PageLimit).
func testListDefaultAndMaxLimit(t *testing.T, b *bundle) {
	specs := make([]store.RunSpec, store.DefaultPageLimit+1)
	for i := range specs {
		specs[i] = b.spec("fn-a")
	}
	b.enqueue(t, specs...)
	for _, limit := range []int{0, -5} {
		p := b.listRuns(t, store.RunFilter{Limit: limit})
		checkEqual(t, fmt.Sprintf("len(ListRuns(limit %d))", limit), len(p.Items), store.DefaultPageLimit)
		if p.Cursor == "" {
			t.Errorf("ListRuns(limit %d): no cursor with more runs left", limit)
		}
	}
	p := b.listRuns(t, store.RunFilter{Limit: store.MaxPageLimit + 1})
	checkEqual(t, "len(ListRuns(limit > max))", len(p.Items), len(specs))
}

// testCancelFinishedRun: cancelling a finished run is ErrFinished on both,
// and changes nothing; an unknown run is ErrNotFound.
func testCancelFinishedRun(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	b.complete(t, id)
	_, err := b.store.CancelRun(b.ctx, id, "late")
	wantErr(t, "CancelRun(finished)", err, store.ErrFinished)
	r := b.getRun(t, id)
	checkEqual(t, "Status", r.Status, store.StatusCompleted)
	checkEqual(t, "Error", r.Error, "")
	_, err = b.store.CancelRun(b.ctx, "01J00000000000000000000000", "x")
	wantErr(t, "CancelRun(unknown)", err, store.ErrNotFound)
}

// testEventWithoutData: an event stored without data read back as nothing on
// SQLite and as null on Redis (the admin API then showed {} and null).
// Decision: it reads back as {}, in GetEvent, listings and a wait's output.
func testEventWithoutData(t *testing.T, b *bundle) {
	waiter, _ := b.waitFor(t, store.Wait{Event: "app/bare"}, time.Hour)
	ev := b.event("app/bare", "")
	ev.Data = nil
	b.publishOne(t, ev)
	checkEqual(t, "GetEvent Data", string(b.getEvent(t, ev.ID).Data), "{}")
	checkEqual(t, "ListEvents Data", string(b.listEvents(t, store.EventFilter{Name: "app/bare"}).Items[0].Data), "{}")
	checkWaitOutput(t, b.waitStep(t, waiter), "app/bare", `{}`)
}

// testCursorOfAnotherListing: SQLite refused an events cursor given to
// ListRuns, Redis used it. Decision: ErrInvalid, both ways.
func testCursorOfAnotherListing(t *testing.T, b *bundle) {
	for range 2 {
		b.enqueueOne(t, "fn-a")
	}
	events := b.listEvents(t, store.EventFilter{Limit: 1})
	runs := b.listRuns(t, store.RunFilter{Limit: 1})
	if events.Cursor == "" || runs.Cursor == "" {
		t.Fatalf("no cursors: events %q, runs %q", events.Cursor, runs.Cursor)
	}
	_, err := b.store.ListRuns(b.ctx, store.RunFilter{Cursor: events.Cursor})
	wantErr(t, "ListRuns with an events cursor", err, store.ErrInvalid)
	_, err = b.store.ListEvents(b.ctx, store.EventFilter{Cursor: runs.Cursor})
	wantErr(t, "ListEvents with a runs cursor", err, store.ErrInvalid)
}
