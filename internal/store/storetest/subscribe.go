package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var subscribeCases = []testCase{
	{"DeliversChanges", testSubscribeDelivers},
	{"NamesWithSeparators", testSubscribeNamesWithSeparators},
	{"AnnouncesWakeUps", testSubscribeWakeUps},
	{"OnlyCommittedChanges", testSubscribeOnlyCommitted},
	{"CancelClosesChannel", testSubscribeCancelCloses},
	{"SlowSubscriberLagsWithoutBlocking", testSubscribeSlow},
}

// guard bounds how long a case waits for a change it expects. It is a
// failure deadline, never a pause: cases return as soon as the change comes.
const guard = 10 * time.Second

// watcher reads a subscription and remembers what it saw, so a case can
// await changes in any order.
type watcher struct {
	t    *testing.T
	ch   <-chan store.Change
	seen []store.Change
}

func (b *bundle) watch(t *testing.T, ctx context.Context) *watcher {
	return &watcher{t: t, ch: b.store.Subscribe(ctx)}
}

// await returns the first change, seen or to come, for which match is true.
func (w *watcher) await(what string, match func(store.Change) bool) store.Change {
	w.t.Helper()
	for i, c := range w.seen {
		if match(c) {
			w.seen = append(w.seen[:i:i], w.seen[i+1:]...)
			return c
		}
	}
	timeout := time.NewTimer(guard)
	defer timeout.Stop()
	for {
		select {
		case c, ok := <-w.ch:
			if !ok {
				w.t.Fatalf("subscription closed while awaiting %s", what)
			}
			if match(c) {
				return c
			}
			w.seen = append(w.seen, c)
		case <-timeout.C:
			w.t.Fatalf("no change %s within %v; saw %d others%s", what, guard, len(w.seen), w.tail())
		}
	}
}

// tail describes the last few changes seen, for failure messages.
func (w *watcher) tail() string {
	const n = 5
	if len(w.seen) == 0 {
		return ""
	}
	return fmt.Sprintf(", the last %+v", w.seen[max(0, len(w.seen)-n):])
}

func testSubscribeDelivers(t *testing.T, b *bundle) {
	w := b.watch(t, b.ctx)
	ev := b.event("app/watched", `{}`)
	s := b.spec("fn-a")
	b.publishOne(t, ev, s)

	c := w.await("event stored", func(c store.Change) bool { return c.Kind == store.ChangeEvent && c.EventID == ev.ID })
	checkEqual(t, "ChangeEvent.EventName", c.EventName, ev.Name)
	checkTime(t, "ChangeEvent.At", c.At, b.now())
	c = w.await("run created", func(c store.Change) bool { return c.Kind == store.ChangeRun && c.RunID == s.ID })
	checkEqual(t, "ChangeRun.Status", c.Status, store.StatusQueued)
	checkEqual(t, "ChangeRun.FunctionID", c.FunctionID, "fn-a")
	checkTime(t, "ChangeRun.AvailableAt", c.AvailableAt, b.now())

	l := b.claimOne(t, "w", s.ID, time.Hour)
	w.await("run claimed", func(c store.Change) bool {
		return c.Kind == store.ChangeRun && c.RunID == s.ID && c.Status == store.StatusRunning
	})
	b.saveStep(t, l, b.doneStep(l, "first"))
	w.await("step recorded", func(c store.Change) bool {
		return c.Kind == store.ChangeStep && c.RunID == s.ID && c.StepID == "first"
	})
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`1`)})
	w.await("run completed", func(c store.Change) bool {
		return c.Kind == store.ChangeRun && c.RunID == s.ID && c.Status == store.StatusCompleted
	})

	// A delayed run announces when it becomes claimable.
	later := b.spec("fn-a")
	later.AvailableAt = b.now().Add(time.Minute)
	b.enqueue(t, later)
	c = w.await("delayed run created", func(c store.Change) bool { return c.Kind == store.ChangeRun && c.RunID == later.ID })
	checkTime(t, "delayed ChangeRun.AvailableAt", c.AvailableAt, later.AvailableAt)
}

// testSubscribeNamesWithSeparators checks that names holding what a
// notification may use to separate its fields or escape them (tabs,
// newlines, backslashes, quotes) arrive whole.
func testSubscribeNamesWithSeparators(t *testing.T, b *bundle) {
	w := b.watch(t, b.ctx)
	ev := b.event("app/a\tb\nc\\t \"d\"", `{}`)
	s := b.spec("fn\\n\tx\n")
	b.publishOne(t, ev, s)
	c := w.await("event stored", func(c store.Change) bool { return c.Kind == store.ChangeEvent && c.EventID == ev.ID })
	checkEqual(t, "ChangeEvent.EventName", c.EventName, ev.Name)
	c = w.await("run created", func(c store.Change) bool { return c.Kind == store.ChangeRun && c.RunID == s.ID })
	checkEqual(t, "ChangeRun.FunctionID", c.FunctionID, s.FunctionID)
	checkEqual(t, "ChangeRun.EventID", c.EventID, ev.ID)

	l := b.claimOne(t, "w", s.ID, time.Hour)
	step := "step\t1\\n"
	b.saveStep(t, l, b.doneStep(l, step))
	c = w.await("step recorded", func(c store.Change) bool { return c.Kind == store.ChangeStep && c.RunID == s.ID })
	checkEqual(t, "ChangeStep.StepID", c.StepID, step)
	checkEqual(t, "ChangeStep.FunctionID", c.FunctionID, s.FunctionID)
}

// testSubscribeWakeUps checks that every transition making a run claimable
// at some time says when, since workers sleep until then.
func testSubscribeWakeUps(t *testing.T, b *bundle) {
	w := b.watch(t, b.ctx)
	wakeOf := func(what, runID string, at time.Time) {
		t.Helper()
		w.await(what, func(c store.Change) bool { return c.RunID == runID && c.AvailableAt.Equal(at) })
	}
	waiter, _ := b.waitFor(t, store.Wait{Event: "app/go"}, time.Hour)
	sender := b.enqueueOne(t, "fn-sender")
	l := b.claimOne(t, "w", sender, time.Hour)
	sent, follow := b.event("app/go", `{}`), b.spec("fn-b")
	b.saveStep(t, l, b.doneStep(l, "send"), store.Publication{Event: sent, Runs: []store.RunSpec{follow}})
	w.await("step recorded", func(c store.Change) bool {
		return c.Kind == store.ChangeStep && c.RunID == sender && c.StepID == "send"
	})
	w.await("emitted event", func(c store.Change) bool { return c.Kind == store.ChangeEvent && c.EventID == sent.ID })
	wakeOf("emitted run created", follow.ID, b.now())
	wakeOf("waiting run woken by the event", waiter, b.now())

	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: b.now().Add(time.Minute)}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	wakeOf("run suspended", sender, b.now().Add(time.Minute))

	b.clock.Advance(time.Minute)
	leases := map[string]*store.Lease{}
	ls := b.claim(t, "w", 10, time.Hour)
	for i := range ls {
		leases[ls[i].RunID] = &ls[i]
	}
	if leases[sender] == nil {
		t.Fatalf("Claim = %v, want the woken sender among them", leaseIDs(ls))
	}
	if err := b.store.Release(b.ctx, leases[sender]); err != nil {
		t.Fatalf("Release: %v", err)
	}
	wakeOf("run released", sender, b.now())

	if _, err := b.store.CancelRun(b.ctx, follow.ID, "stop"); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	w.await("run cancelled", func(c store.Change) bool {
		return c.Kind == store.ChangeRun && c.RunID == follow.ID && c.Status == store.StatusCancelled
	})
}

func testSubscribeOnlyCommitted(t *testing.T, b *bundle) {
	w := b.watch(t, b.ctx)
	good := b.event("app/good", `{}`)
	goodRun := b.spec("fn-a")
	_, err := b.store.Publish(b.ctx, []store.Publication{
		{Event: good, Runs: []store.RunSpec{goodRun}},
		{Event: b.event("", `{}`)},
	})
	wantErr(t, "Publish with an empty name", err, store.ErrInvalid)

	later := b.event("app/later", `{}`)
	b.publishOne(t, later)
	w.await("later event", func(c store.Change) bool { return c.EventID == later.ID })
	for _, c := range w.seen {
		if c.EventID == good.ID || c.RunID == goodRun.ID {
			t.Errorf("change %+v announced a publication that was refused", c)
		}
	}
}

func testSubscribeCancelCloses(t *testing.T, b *bundle) {
	ctx, cancel := context.WithCancel(b.ctx)
	ch := b.store.Subscribe(ctx)
	other := b.watch(t, b.ctx)
	b.publishOne(t, b.event("app/before", `{}`))
	cancel()

	timeout := time.NewTimer(guard)
	defer timeout.Stop()
	for open := true; open; {
		select {
		case _, open = <-ch:
		case <-timeout.C:
			t.Fatalf("subscription not closed within %v of its context ending", guard)
		}
	}
	// Other subscribers carry on.
	ev := b.event("app/after", `{}`)
	b.publishOne(t, ev)
	other.await("event after another subscriber left", func(c store.Change) bool { return c.EventID == ev.ID })
}

func testSubscribeSlow(t *testing.T, b *bundle) {
	w := b.watch(t, b.ctx)
	// 20 000 changes that nobody reads must not block the store.
	done := make(chan error, 1)
	go func() {
		for range 20 {
			pubs := make([]store.Publication, 1000)
			for i := range pubs {
				pubs[i] = store.Publication{Event: b.event("app/flood", `{}`)}
			}
			if _, err := b.store.Publish(b.ctx, pubs); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("publishing to a subscriber that does not read blocked for 60 s")
	}

	// The subscriber is told it lagged before it sees later changes: read
	// one change to make room, publish a probe, then read on.
	w.await("any change", func(store.Change) bool { return true })
	probe := b.event("app/probe", `{}`)
	b.publishOne(t, probe)
	c := w.await("lag marker or the probe", func(c store.Change) bool { return c.Kind == "" || c.EventID == probe.ID })
	if c.Kind != "" {
		t.Errorf("a subscriber that missed changes got %+v without a lag marker (Kind \"\") first", c)
	}
}
