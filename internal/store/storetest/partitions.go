package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// The Partitions cases spread one case's records over the partitions of
// a partitioned store (store.Store.Partitions), where every other case
// keeps its own in one: what the store must see whole, it must see across
// them.
// On a store of one partition they check the same behaviours in it.
var partitionCases = []testCase{
	{"ListingsAndQueueSpanPartitions", testPartitionsListings},
	{"WaitMatchedFromAnotherPartition", testPartitionsWait},
	{"EmitIntoAnotherPartition", testPartitionsEmit},
	{"RunApartFromItsEvent", testPartitionsRerun},
	{"PinnedOnlyInPartitionZero", testPartitionsPinned},
	{"ClaimPassesABlockedPartition", testPartitionsBlockedClaim},
	{"PruneAndSubscribeSpanPartitions", testPartitionsPruneSubscribe},
}

// spread publishes one event named name with a run of fn in each of the
// first three partitions, a millisecond apart, and returns the events'
// and the runs' ids in that order.
func (b *bundle) spread(t *testing.T, name, fn string) (events, runs []string) {
	t.Helper()
	for p := range 3 {
		b.inPartition(p)
		ev, spec := b.event(name, `{}`), b.spec(fn)
		b.publishOne(t, ev, spec)
		events, runs = append(events, ev.ID), append(runs, spec.ID)
		b.clock.Advance(time.Millisecond)
	}
	return events, runs
}

func testPartitionsListings(t *testing.T, b *bundle) {
	events, runs := b.spread(t, "part/a", "fn-a")
	otherEvents, otherRuns := b.spread(t, "part/b", "fn-b")
	allEvents := append(slices.Clone(events), otherEvents...)
	allRuns := append(slices.Clone(runs), otherRuns...)

	checkIDs(t, "ListEvents by name", eventIDs(b.allEvents(t, store.EventFilter{Name: "part/a"})), reversed(events))
	checkIDs(t, "ListEvents", eventIDs(b.allEvents(t, store.EventFilter{})), reversed(allEvents))
	checkIDs(t, "ListEvents, pages of 2", eventIDs(b.allEvents(t, store.EventFilter{Limit: 2})), reversed(allEvents))
	checkIDs(t, "ListRuns by function", runIDs(b.allRuns(t, store.RunFilter{FunctionID: "fn-b"})), reversed(otherRuns))
	checkIDs(t, "ListRuns", runIDs(b.allRuns(t, store.RunFilter{})), reversed(allRuns))
	checkIDs(t, "ListRuns Queued", runIDs(b.allRuns(t, store.RunFilter{Statuses: []store.Status{store.StatusQueued}})), reversed(allRuns))
	for i, id := range events {
		checkIDs(t, "ListRuns of an event", runIDs(b.allRuns(t, store.RunFilter{EventID: id})), []string{runs[i]})
		checkEqual(t, "GetEvent", b.getEvent(t, id).ID, id)
		checkEqual(t, "GetRun", b.getRun(t, runs[i]).EventID, id)
	}

	depth, err := b.store.QueueDepth(b.ctx)
	if err != nil {
		t.Fatalf("QueueDepth: %v", err)
	}
	checkEqual(t, "QueueDepth", depth, len(allRuns))
	// The earliest wake-up is in whichever partition holds it.
	late := b.spec("fn-a")
	late.AvailableAt = b.now().Add(time.Hour)
	b.inPartition(1)
	soon := b.spec("fn-a")
	soon.AvailableAt = b.now().Add(time.Minute)
	b.inPartition(2)
	lateEv := b.event("part/later", `{}`)
	late.ID = b.spec("fn-a").ID
	b.publishOne(t, lateEv, late)
	b.inPartition(1)
	b.publishOne(t, b.event("part/later", `{}`), soon)

	// Claims reach every partition, and lease runs in the order they
	// became claimable, whichever partition holds them.
	var got []string
	for range 4 {
		got = append(got, leaseIDs(b.claim(t, "w", 1, time.Hour))...)
	}
	checkIDs(t, "claimed one at a time", got, allRuns[:4])
	got = append(got, leaseIDs(b.claim(t, "w", 10, time.Hour))...)
	slices.Sort(got)
	want := slices.Sorted(slices.Values(allRuns))
	checkIDs(t, "claimed", got, want)
	at, ok, err := b.store.NextWake(b.ctx)
	if err != nil || !ok {
		t.Fatalf("NextWake = %v, %v, %v", at, ok, err)
	}
	// The leases end in an hour, as late does: soon is the earliest.
	checkTime(t, "NextWake", at, soon.AvailableAt)
}

func testPartitionsWait(t *testing.T, b *bundle) {
	// A waiting run in one partition, the events in the others: one
	// plain (no flow control), one with a client id.
	b.inPartition(1)
	waiter, _ := b.waitFor(t, store.Wait{Event: "app/approved", MatchPath: "data.id", MatchValue: []byte(`"x"`)}, time.Hour)
	b.inPartition(2)
	b.publishOne(t, b.event("app/approved", `{"id":"other"}`))
	checkEqual(t, "step Status after another id", b.waitStep(t, waiter).Status, store.StatusWaiting)
	b.publishOne(t, b.event("app/approved", `{"id":"x"}`))
	checkWaitOutput(t, b.waitStep(t, waiter), "app/approved", `{"id":"x"}`)
	b.claimOne(t, "w", waiter, time.Hour)

	b.inPartition(2)
	second, _ := b.waitFor(t, store.Wait{Event: "app/approved"}, time.Hour)
	b.inPartition(0) // an event with a client id is partition 0's
	ev := b.event("app/approved", `{"n":2}`)
	ev.ClientID = "client-approved"
	b.publishOne(t, ev)
	checkWaitOutput(t, b.waitStep(t, second), "app/approved", `{"n":2}`)
}

func testPartitionsEmit(t *testing.T, b *bundle) {
	// A waiter in partition 0; a run in partition 1 emits, in one step, an
	// event and its run in partition 2, and when it fails its own failure
	// event into partition 0.
	waiter, _ := b.waitFor(t, store.Wait{Event: "app/done"}, time.Hour)
	b.inPartition(1)
	sender := b.enqueueOne(t, "fn-sender")
	l := b.claimOne(t, "w", sender, time.Hour)
	b.inPartition(2)
	done, doneRun := b.event("app/done", `{"ok":true}`), b.spec("fn-next")
	b.saveStep(t, l, b.doneStep(l, "send"), store.Publication{Event: done, Runs: []store.RunSpec{doneRun}})
	checkEqual(t, "emitted event", b.getEvent(t, done.ID).Name, "app/done")
	checkIDs(t, "the emitted event's runs", runIDs(b.allRuns(t, store.RunFilter{EventID: done.ID})), []string{doneRun.ID})
	checkWaitOutput(t, b.waitStep(t, waiter), "app/done", `{"ok":true}`)

	b.inPartition(0)
	failed := b.event("app/failed", `{}`)
	failed.ClientID = "failed:" + sender
	b.finish(t, l, store.Outcome{Status: store.StatusFailed, Error: "boom", Emit: []store.Publication{{Event: failed}}})
	ev, err := b.store.EventByClientID(b.ctx, failed.ClientID)
	if err != nil {
		t.Fatalf("EventByClientID: %v", err)
	}
	checkEqual(t, "the failure event", ev.ID, failed.ID)
	checkEqual(t, "sender", b.getRun(t, sender).Status, store.StatusFailed)

	got := leaseIDs(b.claim(t, "w", 10, time.Hour))
	slices.Sort(got)
	checkIDs(t, "claimable", got, slices.Sorted(slices.Values([]string{waiter, doneRun.ID})))
}

func testPartitionsRerun(t *testing.T, b *bundle) {
	// An event and its run in partition 2; a run created later for it
	// (a rerun) in partition 0, with a concurrency key, as the engine puts
	// a run flow control decides on.
	b.inPartition(2)
	ev, first := b.event("app/rerun", `{"v":1}`), b.spec("fn-a")
	b.publishOne(t, ev, first)
	b.inPartition(0)
	again := b.spec("fn-a")
	again.ConcurrencyKey, again.ConcurrencyLimit = "fn-a", 1
	refs, err := b.store.CreateRuns(b.ctx, ev.ID, []store.RunSpec{again})
	if b.slotted() {
		// Decision: where each partition is a slot of its own, such a run
		// is refused, creating nothing (docs/engine.md).
		wantErr(t, "CreateRuns apart from its event on a cluster", err, store.ErrInvalid)
		checkIDs(t, "the event's runs", runIDs(b.allRuns(t, store.RunFilter{EventID: ev.ID})), []string{first.ID})
		return
	}
	if err != nil {
		t.Fatalf("CreateRuns: %v", err)
	}
	checkRef(t, "CreateRuns", refs[0], store.RunRef{ID: again.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	got := b.allRuns(t, store.RunFilter{EventID: ev.ID})
	slices.SortFunc(got, func(a, b store.Run) int { return cmpString(a.ID, b.ID) })
	checkIDs(t, "the event's runs", runIDs(got), []string{first.ID, again.ID})
	leases := b.claim(t, "w", 10, time.Hour)
	checkEqual(t, "claimed", len(leases), 2)
	for i := range leases {
		l := &leases[i]
		checkEqual(t, "lease's event", l.Event.ID, ev.ID)
		checkJSON(t, "lease's event data", l.Event.Data, []byte(`{"v":1}`))
		if l.RunID == first.ID {
			b.finish(t, l, store.Outcome{Status: store.StatusCompleted})
		}
	}
	// Retention keeps the event while the rerun is unfinished.
	b.clock.Advance(time.Hour)
	b.prune(t, b.now(), 100)
	checkEqual(t, "event kept", b.getEvent(t, ev.ID).ID, ev.ID)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// testPartitionsPinned: a publication with a client id or a run that
// flow control decides on belongs in partition 0, where every
// flow-control key is (store.Publication.Pinned): one in another
// partition is refused whole, storing nothing, so that no script reaches
// across slots for those keys; in partition 0 the same publications are
// stored, and a step's emit with a client id goes there from a run of
// another partition.
func testPartitionsPinned(t *testing.T, b *bundle) {
	keyed := func(fn string, set func(*store.RunSpec)) store.RunSpec {
		s := b.spec(fn)
		set(&s)
		return s
	}
	b.inPartition(1)
	cases := []struct {
		what string
		pub  store.Publication
	}{
		{"a client id", func() store.Publication {
			ev := b.event("app/once", `{}`)
			ev.ClientID = "once"
			return store.Publication{Event: ev, ClientIDTTL: time.Hour}
		}()},
		{"a concurrency key", store.Publication{Event: b.event("app/c", `{}`), Runs: []store.RunSpec{
			keyed("fn-c", func(s *store.RunSpec) { s.ConcurrencyKey, s.ConcurrencyLimit = "fn-c", 1 })}}},
		{"an idempotency key", store.Publication{Event: b.event("app/i", `{}`), Runs: []store.RunSpec{
			keyed("fn-i", func(s *store.RunSpec) { s.IdempotencyKey, s.IdempotencyTTL = "k", time.Hour })}}},
		{"a singleton key", store.Publication{Event: b.event("app/s", `{}`), Runs: []store.RunSpec{
			keyed("fn-s", func(s *store.RunSpec) { s.SingletonKey = "fn-s" })}}},
	}
	refused := cases
	if b.parts == 1 {
		refused = nil // every publication is in partition 0
	}
	for _, c := range refused {
		_, err := b.store.Publish(b.ctx, []store.Publication{c.pub})
		wantErr(t, "Publish in partition 1 with "+c.what, err, store.ErrInvalid)
		if _, err := b.store.GetEvent(b.ctx, c.pub.Event.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetEvent after a refused publication with %s = %v, want ErrNotFound", c.what, err)
		}
	}
	if _, err := b.store.EventByClientID(b.ctx, "once"); b.parts > 1 && !errors.Is(err, store.ErrNotFound) {
		t.Errorf("EventByClientID after a refused publication = %v, want ErrNotFound", err)
	}

	// A run of partition 1 emits an event with a client id into partition 0.
	sender := b.enqueueOne(t, "fn-sender")
	l := b.claimOne(t, "w", sender, time.Hour)
	b.inPartition(0)
	ev := b.event("app/once", `{}`)
	ev.ClientID = "once"
	b.saveStep(t, l, b.doneStep(l, "send"), store.Publication{Event: ev, ClientIDTTL: time.Hour})
	got, err := b.store.EventByClientID(b.ctx, "once")
	if err != nil || got.ID != ev.ID {
		t.Errorf("EventByClientID(once) = %s, %v; want %s", got.ID, err, ev.ID)
	}
	for _, c := range cases[1:] {
		c.pub.Event.ID = b.id()
		for i := range c.pub.Runs {
			c.pub.Runs[i].ID = b.id()
		}
		if _, err := b.store.Publish(b.ctx, []store.Publication{c.pub}); err != nil {
			t.Errorf("Publish in partition 0 with %s: %v", c.what, err)
		}
	}
}

func testPartitionsPruneSubscribe(t *testing.T, b *bundle) {
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	w := b.watch(t, ctx)
	events, runs := b.spread(t, "part/old", "fn-a")
	for _, id := range runs {
		w.await("queued "+id, func(c store.Change) bool { return c.Kind == store.ChangeRun && c.RunID == id })
	}
	leases := b.claim(t, "w", 10, time.Minute)
	checkEqual(t, "claimed", len(leases), len(runs))
	for i := range leases {
		b.finish(t, &leases[i], store.Outcome{Status: store.StatusCompleted})
	}
	b.clock.Advance(time.Hour)
	if n := b.prune(t, b.now(), 100); n != 2*len(runs) {
		t.Errorf("Prune deleted %d, want %d (every run and event)", n, 2*len(runs))
	}
	for i, id := range events {
		if _, err := b.store.GetEvent(b.ctx, id); err == nil {
			t.Errorf("event %s is still there", id)
		}
		if _, err := b.store.GetRun(b.ctx, runs[i]); err == nil {
			t.Errorf("run %s is still there", runs[i])
		}
	}
}

func testPartitionsBlockedClaim(t *testing.T, b *bundle) {
	// The earliest claimable entries are runs a concurrency limit holds
	// back, in partition 0 (where the engine puts such runs); a plain run
	// in another partition, queued after them, is claimed all the same.
	b.inPartition(0)
	limited := func() store.RunSpec {
		s := b.spec("fn-c")
		s.ConcurrencyKey, s.ConcurrencyLimit = "fn-c", 1
		return s
	}
	first := limited()
	b.enqueue(t, first)
	b.claimOne(t, "w", first.ID, time.Hour)
	for range 3 {
		b.enqueue(t, limited())
	}
	b.clock.Advance(time.Millisecond)
	b.inPartition(1)
	plain := b.spec("fn-p")
	b.enqueue(t, plain)
	checkIDs(t, "claimed", leaseIDs(b.claim(t, "w", 1, time.Hour)), []string{plain.ID})
}
