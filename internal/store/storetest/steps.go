package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var stepCases = []testCase{
	{"SaveStepAndSteps", testSaveStepAndSteps},
	{"SaveStepEmits", testSaveStepEmits},
	{"ClaimManyCarriesEachRunsSteps", testClaimManyCarriesEachRunsSteps},
}

// checkStep compares every field of a recorded step.
func checkStep(t *testing.T, what string, got, want store.Step) {
	t.Helper()
	checkEqual(t, what+".RunID", got.RunID, want.RunID)
	checkEqual(t, what+".ID", got.ID, want.ID)
	checkEqual(t, what+".Name", got.Name, want.Name)
	checkEqual(t, what+".Kind", got.Kind, want.Kind)
	checkEqual(t, what+".Status", got.Status, want.Status)
	checkEqual(t, what+".Error", got.Error, want.Error)
	checkTime(t, what+".WakeAt", got.WakeAt, want.WakeAt)
	checkTime(t, what+".StartedAt", got.StartedAt, want.StartedAt)
	checkTime(t, what+".EndedAt", got.EndedAt, want.EndedAt)
	if len(want.Output) == 0 {
		if len(got.Output) != 0 && string(got.Output) != "null" {
			t.Errorf("%s.Output = %s, want none", what, got.Output)
		}
	} else {
		checkJSON(t, what+".Output", got.Output, want.Output)
	}
	if len(got.Attempts) != len(want.Attempts) {
		t.Errorf("%s.Attempts = %+v, want %+v", what, got.Attempts, want.Attempts)
	} else {
		for i := range want.Attempts {
			a := fmt.Sprintf("%s.Attempts[%d]", what, i)
			checkTime(t, a+".StartedAt", got.Attempts[i].StartedAt, want.Attempts[i].StartedAt)
			checkTime(t, a+".EndedAt", got.Attempts[i].EndedAt, want.Attempts[i].EndedAt)
			checkEqual(t, a+".Error", got.Attempts[i].Error, want.Attempts[i].Error)
		}
	}
	switch {
	case want.Wait == nil && got.Wait != nil:
		t.Errorf("%s.Wait = %+v, want nil", what, *got.Wait)
	case want.Wait != nil && got.Wait == nil:
		t.Errorf("%s.Wait = nil, want %+v", what, *want.Wait)
	case want.Wait != nil:
		checkEqual(t, what+".Wait.Event", got.Wait.Event, want.Wait.Event)
		checkEqual(t, what+".Wait.MatchPath", got.Wait.MatchPath, want.Wait.MatchPath)
		checkJSON(t, what+".Wait.MatchValue", got.Wait.MatchValue, want.Wait.MatchValue)
	}
}

func checkSteps(t *testing.T, what string, got, want []store.Step) {
	t.Helper()
	ids := func(ss []store.Step) []string {
		var r []string
		for _, s := range ss {
			r = append(r, s.ID)
		}
		return r
	}
	if len(got) != len(want) {
		t.Fatalf("%s: steps %v, want %v", what, ids(got), ids(want))
	}
	for i := range want {
		checkStep(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

func (b *bundle) saveStep(t *testing.T, l *store.Lease, s store.Step, emit ...store.Publication) {
	t.Helper()
	if err := b.store.SaveStep(b.ctx, l, s, emit); err != nil {
		t.Fatalf("SaveStep(%s): %v", s.ID, err)
	}
}

func testSaveStepAndSteps(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	other := b.enqueueOne(t, "fn-a")
	ls := b.claim(t, "w", 10, time.Hour)
	if len(ls) != 2 {
		t.Fatalf("Claim = %v, want both runs", leaseIDs(ls))
	}
	l := &ls[0]
	if l.RunID != id {
		l = &ls[1]
	}

	t1 := b.now()
	b.clock.Advance(2 * time.Second)
	a1 := store.Attempt{StartedAt: t1, EndedAt: b.now(), Error: "timeout"}
	fetch := store.Step{
		RunID:     id,
		ID:        "fetch",
		Name:      "fetch",
		Kind:      store.StepRun,
		Status:    store.StatusRunning,
		Attempts:  []store.Attempt{a1},
		Error:     "timeout",
		WakeAt:    b.now().Add(15 * time.Second),
		StartedAt: t1,
	}
	b.saveStep(t, l, fetch)
	checkSteps(t, "after a failed attempt", b.steps(t, id), []store.Step{fetch})

	// The retry succeeds: the same step is updated in place.
	b.clock.Advance(15 * time.Second)
	t2 := b.now()
	b.clock.Advance(time.Second)
	fetch.Attempts = []store.Attempt{a1, {StartedAt: t2, EndedAt: b.now()}}
	fetch.Status = store.StatusCompleted
	fetch.Error = ""
	fetch.Output = json.RawMessage(`{"ok": true, "items": [1, 2]}`)
	fetch.WakeAt = time.Time{}
	fetch.EndedAt = b.now()
	b.saveStep(t, l, fetch)

	nap := store.Step{
		RunID:     id,
		ID:        "nap",
		Name:      "nap",
		Kind:      store.StepSleep,
		Status:    store.StatusSleeping,
		WakeAt:    b.now().Add(time.Hour),
		StartedAt: b.now(),
	}
	b.saveStep(t, l, nap)
	again := b.doneStep(l, "fetch:1")
	again.Name = "fetch"
	b.saveStep(t, l, again)

	// Decision: Steps lists a run's steps in the order they were first
	// recorded (execution order).
	want := []store.Step{fetch, nap, again}
	checkSteps(t, "Steps", b.steps(t, id), want)
	if got := b.steps(t, other); len(got) != 0 {
		t.Errorf("Steps of another run = %d steps, want none", len(got))
	}

	// A new lease carries the steps, for memoization.
	if err := b.store.Release(b.ctx, l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	l2 := b.claimOne(t, "w2", id, time.Hour)
	checkSteps(t, "Lease.Steps", l2.Steps, want)
}

func testSaveStepEmits(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	b.clock.Advance(time.Second)

	sent := b.event("app/invoice.sent", `{"invoice": 7}`)
	follow := b.spec("fn-b")
	step := b.doneStep(l, "send")
	step.Kind = store.StepSendEvent
	step.Output = json.RawMessage(`{"ids":["` + sent.ID + `"]}`)
	b.saveStep(t, l, step, store.Publication{Event: sent, Runs: []store.RunSpec{follow}})

	checkSteps(t, "Steps", b.steps(t, id), []store.Step{step})
	e := b.getEvent(t, sent.ID)
	checkEqual(t, "emitted Name", e.Name, sent.Name)
	checkJSON(t, "emitted Data", e.Data, sent.Data)
	checkTime(t, "emitted ReceivedAt", e.ReceivedAt, b.now())
	r := b.getRun(t, follow.ID)
	checkEqual(t, "triggered run Status", r.Status, store.StatusQueued)
	checkEqual(t, "triggered run EventID", r.EventID, sent.ID)
	b.claimOne(t, "w", follow.ID, time.Hour)

	// Emitted events dedup on their client id like published ones (in
	// partition 0 on a partitioned store, as the engine places them).
	b.inPartition(0)
	d1 := b.event("app/once", `{}`)
	d1.ClientID = "once"
	d2 := b.event("app/once", `{}`)
	d2.ClientID = "once"
	b.saveStep(t, l, b.doneStep(l, "send:1"), store.Publication{Event: d1, ClientIDTTL: time.Hour})
	b.saveStep(t, l, b.doneStep(l, "send:2"), store.Publication{Event: d2, ClientIDTTL: time.Hour})
	b.getEvent(t, d1.ID)
	_, err := b.store.GetEvent(b.ctx, d2.ID)
	wantErr(t, "GetEvent(emitted duplicate)", err, store.ErrNotFound)
}

// testClaimManyCarriesEachRunsSteps claims several resumed runs at once:
// each lease carries its own run's steps, and its own token.
func testClaimManyCarriesEachRunsSteps(t *testing.T, b *bundle) {
	fresh, one, two := b.enqueueOne(t, "fn-a"), b.enqueueOne(t, "fn-a"), b.enqueueOne(t, "fn-b")
	leases := map[string]*store.Lease{}
	for _, l := range b.claim(t, "w", 10, time.Hour) {
		leases[l.RunID] = &l
	}
	if len(leases) != 3 {
		t.Fatalf("Claim = %d runs, want 3", len(leases))
	}
	steps := map[string][]store.Step{fresh: nil}
	for _, id := range []string{two, one, two} {
		st := b.doneStep(leases[id], fmt.Sprintf("step:%d", len(steps[id])))
		b.saveStep(t, leases[id], st)
		steps[id] = append(steps[id], st)
	}
	// Suspended in reverse order of creation, so the queue order differs
	// from the id order.
	for i, id := range []string{two, one, fresh} {
		sus := store.Suspension{Status: store.StatusSleeping, AvailableAt: b.now().Add(time.Duration(i+1) * time.Second)}
		if err := b.store.Suspend(b.ctx, leases[id], sus); err != nil {
			t.Fatalf("Suspend(%s): %v", id, err)
		}
	}
	b.clock.Advance(time.Minute)

	ls := b.claim(t, "w2", 10, time.Hour)
	checkEqual(t, "claimed runs", fmt.Sprint(leaseIDs(ls)), fmt.Sprint([]string{two, one, fresh}))
	tokens := map[string]bool{}
	for _, l := range ls {
		checkSteps(t, "Lease.Steps of "+l.RunID, l.Steps, steps[l.RunID])
		tokens[l.Token] = true
	}
	checkEqual(t, "distinct tokens", len(tokens), len(ls))
}
