package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var waitCases = []testCase{
	{"MatchCompletesStep", testWaitMatch},
	{"TimedOutWaitIgnoresEvents", testWaitTimeout},
	{"MatchAnyByEmit", testWaitMatchAnyByEmit},
	{"CancelledRunIgnoresEvents", testWaitCancelled},
	{"MatchWhileLeased", testWaitMatchWhileLeased},
	{"EmptyValueMatchesNothing", testWaitEmptyValue},
	{"MatchOnTS", testWaitMatchOnTS},
}

// waitFor claims a new run, records a Waiting step for wait with the given
// timeout and suspends the run until then. It returns the run id and step.
func (b *bundle) waitFor(t *testing.T, w store.Wait, timeout time.Duration) (string, store.Step) {
	t.Helper()
	id := b.enqueueOne(t, "fn-waiter")
	l := b.claimOne(t, "w", id, time.Hour)
	step := store.Step{
		RunID:     id,
		ID:        "approval",
		Name:      "approval",
		Kind:      store.StepWait,
		Status:    store.StatusWaiting,
		WakeAt:    b.now().Add(timeout),
		StartedAt: b.now(),
		Wait:      &w,
	}
	b.saveStep(t, l, step)
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: step.WakeAt}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	return id, step
}

// waitStep returns the run's step "approval".
func (b *bundle) waitStep(t *testing.T, runID string) store.Step {
	t.Helper()
	for _, s := range b.steps(t, runID) {
		if s.ID == "approval" {
			return s
		}
	}
	t.Fatalf("run %s has no step approval", runID)
	return store.Step{}
}

// checkWaitOutput expects the step to hold the event named name with data.
func checkWaitOutput(t *testing.T, s store.Step, name, data string) {
	t.Helper()
	checkEqual(t, "step Status", s.Status, store.StatusCompleted)
	var out struct {
		Name string          `json:"name"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(s.Output, &out); err != nil {
		t.Fatalf("step Output %s is not an event: %v", s.Output, err)
	}
	checkEqual(t, "Output name", out.Name, name)
	checkJSON(t, "Output data", out.Data, []byte(data))
}

func testWaitMatch(t *testing.T, b *bundle) {
	for _, path := range []string{"data.id", "event.data.id"} {
		name := "app/approved-" + path
		id, step := b.waitFor(t, store.Wait{Event: name, MatchPath: path, MatchValue: json.RawMessage(`"42"`)}, time.Hour)
		checkSteps(t, path+": recorded wait", b.steps(t, id), []store.Step{step})

		// Wrong value, wrong type, wrong name, missing field: no match.
		b.publishOne(t, b.event(name, `{"id":"43"}`))
		b.publishOne(t, b.event(name, `{"id":42}`))
		b.publishOne(t, b.event("app/other", `{"id":"42"}`))
		b.publishOne(t, b.event(name, `{"other":"42"}`))
		checkEqual(t, path+": step Status after non-matching events", b.waitStep(t, id).Status, store.StatusWaiting)
		checkTime(t, path+": AvailableAt after non-matching events", b.getRun(t, id).AvailableAt, step.WakeAt)
		b.claimNone(t, "w")

		b.clock.Advance(time.Minute)
		match := `{"id":"42","extra":"first"}`
		b.clock.Advance(1500 * time.Millisecond) // received after its ts
		ev := b.event(name, match)
		ev.TS -= 2000
		pub := b.publishOne(t, ev)
		matched := b.waitStep(t, id)
		checkWaitOutput(t, matched, name, match)
		// The output is the event as GetEvent reads it.
		var out store.Event
		if err := json.Unmarshal(matched.Output, &out); err != nil {
			t.Fatal(err)
		}
		stored := b.getEvent(t, pub.EventID)
		checkEqual(t, path+": wait output's internal id", out.ID, pub.EventID)
		checkEqual(t, path+": wait output's ts", out.TS, stored.TS)
		checkTime(t, path+": wait output's received_at", out.ReceivedAt, stored.ReceivedAt)
		checkTime(t, path+": received_at", stored.ReceivedAt, b.now())
		checkEqual(t, path+": ts", stored.TS, b.now().UnixMilli()-2000)
		// The wait started when it was recorded and ended at the match.
		checkTime(t, path+": wait StartedAt after the match", matched.StartedAt, step.StartedAt)
		checkTime(t, path+": wait EndedAt after the match", matched.EndedAt, b.now())
		// Only the first match counts.
		b.publishOne(t, b.event(name, `{"id":"42","extra":"second"}`))
		checkWaitOutput(t, b.waitStep(t, id), name, match)

		r := b.getRun(t, id)
		if r.AvailableAt.After(b.now()) {
			t.Errorf("%s: AvailableAt after the match = %v, want now (%v) or earlier", path, fmtTime(r.AvailableAt), fmtTime(b.now()))
		}
		l := b.claimOne(t, "w", id, time.Hour)
		checkEqual(t, path+": Lease.Steps", len(l.Steps), 1)
		checkWaitOutput(t, l.Steps[0], name, match)
		b.finish(t, l, store.Outcome{Status: store.StatusCompleted})
	}

	// A number matches a number.
	id, _ := b.waitFor(t, store.Wait{Event: "app/n", MatchPath: "data.n", MatchValue: json.RawMessage(`7`)}, time.Hour)
	b.publishOne(t, b.event("app/n", `{"n":"7"}`))
	checkEqual(t, "number wait after a string", b.waitStep(t, id).Status, store.StatusWaiting)
	b.publishOne(t, b.event("app/n", `{"n": 7}`))
	checkWaitOutput(t, b.waitStep(t, id), "app/n", `{"n":7}`)
}

func testWaitTimeout(t *testing.T, b *bundle) {
	id, step := b.waitFor(t, store.Wait{Event: "app/approved", MatchPath: "data.id", MatchValue: json.RawMessage(`"42"`)}, 10*time.Minute)
	b.clock.Advance(10*time.Minute + time.Second)
	b.publishOne(t, b.event("app/approved", `{"id":"42"}`))
	got := b.waitStep(t, id)
	checkEqual(t, "step Status after the timeout", got.Status, store.StatusWaiting)
	if len(got.Output) != 0 && string(got.Output) != "null" {
		t.Errorf("step Output after the timeout = %s, want none", got.Output)
	}
	l := b.claimOne(t, "w", id, time.Hour)
	checkSteps(t, "Lease.Steps", l.Steps, []store.Step{step})
}

func testWaitMatchAnyByEmit(t *testing.T, b *bundle) {
	waiter, _ := b.waitFor(t, store.Wait{Event: "app/done"}, time.Hour)
	sender := b.enqueueOne(t, "fn-sender")
	l := b.claimOne(t, "w", sender, time.Hour)
	b.saveStep(t, l, b.doneStep(l, "send"), store.Publication{Event: b.event("app/done", `{"any":"thing"}`)})
	checkWaitOutput(t, b.waitStep(t, waiter), "app/done", `{"any":"thing"}`)
	b.claimOne(t, "w", waiter, time.Hour)
}

func testWaitCancelled(t *testing.T, b *bundle) {
	id, _ := b.waitFor(t, store.Wait{Event: "app/approved"}, time.Hour)
	if _, err := b.store.CancelRun(b.ctx, id, "stop"); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	b.publishOne(t, b.event("app/approved", `{}`))
	r := b.getRun(t, id)
	checkEqual(t, "Status", r.Status, store.StatusCancelled)
	checkTime(t, "AvailableAt", r.AvailableAt, time.Time{})
	b.claimNone(t, "w")
}

func testWaitMatchWhileLeased(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-waiter")
	l := b.claimOne(t, "w", id, time.Hour)
	step := store.Step{
		RunID:     id,
		ID:        "approval",
		Name:      "approval",
		Kind:      store.StepWait,
		Status:    store.StatusWaiting,
		WakeAt:    b.now().Add(time.Hour),
		StartedAt: b.now(),
		Wait:      &store.Wait{Event: "app/approved"},
	}
	b.saveStep(t, l, step)
	// The event arrives between SaveStep and Suspend.
	b.publishOne(t, b.event("app/approved", `{"ok":true}`))
	checkWaitOutput(t, b.waitStep(t, id), "app/approved", `{"ok":true}`)
	// Decision: the match leaves the lease alone, and the wake-up is not
	// lost: Suspend until the timeout makes the run claimable at once.
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: step.WakeAt}); err != nil {
		t.Fatalf("Suspend after the match: %v", err)
	}
	l2 := b.claimOne(t, "w2", id, time.Hour)
	checkEqual(t, "len(Lease.Steps)", len(l2.Steps), 1)
	checkWaitOutput(t, l2.Steps[0], "app/approved", `{"ok":true}`)
}

// testWaitEmptyValue: an event without a value at the match path (absent,
// null or "") never completes a wait, not even one whose own value is
// null or "": no value is not a value two events share.
func testWaitEmptyValue(t *testing.T, b *bundle) {
	for _, want := range []string{`""`, `null`} {
		name := "app/empty-" + want
		id, _ := b.waitFor(t, store.Wait{Event: name, MatchPath: "data.id", MatchValue: json.RawMessage(want)}, time.Hour)
		for _, data := range []string{`{}`, `{"id":null}`, `{"id":""}`, `{"other":""}`} {
			b.publishOne(t, b.event(name, data))
			checkEqual(t, want+": step Status after "+data, b.waitStep(t, id).Status, store.StatusWaiting)
		}
		b.claimNone(t, "w")
	}
}

// testWaitMatchOnTS: a wait on the event's ts matches an event whose ts is
// the time of its id, as the engine gives an event sent without a ts (a
// store may leave such a ts out of what it keeps), and not one whose ts
// differs.
func testWaitMatchOnTS(t *testing.T, b *bundle) {
	const name = "app/stamped"
	b.clock.Advance(time.Minute)
	ts := b.now().UnixMilli()
	id, _ := b.waitFor(t, store.Wait{Event: name, MatchPath: "event.ts", MatchValue: json.RawMessage(fmt.Sprint(ts))}, time.Hour)

	early := b.event(name, `{"n":1}`)
	early.TS--
	b.publishOne(t, early)
	checkEqual(t, "step Status after an event of another ts", b.waitStep(t, id).Status, store.StatusWaiting)

	pub := b.publishOne(t, b.event(name, `{"n":2}`))
	checkEqual(t, "stored ts", b.getEvent(t, pub.EventID).TS, ts)
	matched := b.waitStep(t, id)
	checkEqual(t, "step Status after the event of that ts", matched.Status, store.StatusCompleted)
	checkWaitOutput(t, matched, name, `{"n":2}`)
	var out store.Event
	if err := json.Unmarshal(matched.Output, &out); err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "wait output's ts", out.TS, ts)
}
