package storetest

import (
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var pruneCases = []testCase{
	{"Retention", testPruneRetention},
	{"Batch", testPruneBatch},
	{"ExpiredKeys", testPruneKeys},
	{"Function", testPruneFunction},
}

func (b *bundle) prune(t *testing.T, cutoff time.Time, batch int) int {
	t.Helper()
	n, err := b.store.Prune(b.ctx, cutoff, batch)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	return n
}

func testPruneRetention(t *testing.T, b *bundle) {
	// Old: a finished run with a step, an unfinished run, an event without
	// runs, a sleeping run.
	oldDone, oldDoneRun := b.event("app/old", `{}`), b.spec("fn-a")
	b.publishOne(t, oldDone, oldDoneRun)
	l := b.claimOne(t, "w", oldDoneRun.ID, time.Hour)
	b.saveStep(t, l, b.doneStep(l, "s"))
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted})

	oldQueued, oldQueuedRun := b.event("app/old", `{}`), b.spec("fn-a")
	oldQueuedRun.AvailableAt = start.Add(3 * time.Hour)
	oldQueued.ID = oldQueuedRun.ID // the usual run: it shares its event's id (store.RunSpec.ID)
	b.publishOne(t, oldQueued, oldQueuedRun)
	oldBare := b.event("app/old", `{}`)
	b.publishOne(t, oldBare)
	oldSleeping, oldSleepingRun := b.event("app/old", `{}`), b.spec("fn-a")
	b.publishOne(t, oldSleeping, oldSleepingRun)
	l = b.claimOne(t, "w", oldSleepingRun.ID, time.Hour)
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: start.Add(3 * time.Hour)}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	// Created long ago, finished recently: kept.
	lateRun := b.spec("fn-a")
	lateRun.AvailableAt = start.Add(110 * time.Minute)
	b.enqueue(t, lateRun)

	// At the cutoff exactly: kept, since only what ended or arrived
	// before it goes.
	b.clock.Advance(time.Hour)
	edge, edgeRun := b.event("app/edge", `{}`), b.spec("fn-a")
	b.publishOne(t, edge, edgeRun)
	b.complete(t, edgeRun.ID)
	edgeBare := b.event("app/edge", `{}`)
	b.publishOne(t, edgeBare)

	b.clock.Advance(time.Hour)
	b.complete(t, lateRun.ID)
	recent, recentRun := b.event("app/new", `{}`), b.spec("fn-a")
	b.publishOne(t, recent, recentRun)
	b.complete(t, recentRun.ID)

	cutoff := b.now().Add(-time.Hour)
	if n := b.prune(t, cutoff, 100); n < 3 {
		t.Errorf("Prune removed %d rows, want at least 3 (a run and two events)", n)
	}
	_, err := b.store.GetRun(b.ctx, oldDoneRun.ID)
	wantErr(t, "GetRun(old finished run)", err, store.ErrNotFound)
	_, err = b.store.Steps(b.ctx, oldDoneRun.ID)
	wantErr(t, "Steps(old finished run)", err, store.ErrNotFound)
	_, err = b.store.GetEvent(b.ctx, oldDone.ID)
	wantErr(t, "GetEvent(old event of a finished run)", err, store.ErrNotFound)
	_, err = b.store.GetEvent(b.ctx, oldBare.ID)
	wantErr(t, "GetEvent(old event without runs)", err, store.ErrNotFound)

	for _, id := range []string{oldQueued.ID, oldSleeping.ID, recent.ID, edge.ID, edgeBare.ID} {
		b.getEvent(t, id)
	}
	checkEqual(t, "run finished at the cutoff", b.getRun(t, edgeRun.ID).Status, store.StatusCompleted)
	checkEqual(t, "old queued run", b.getRun(t, oldQueuedRun.ID).Status, store.StatusQueued)
	checkEqual(t, "old sleeping run", b.getRun(t, oldSleepingRun.ID).Status, store.StatusSleeping)
	checkEqual(t, "recently finished run", b.getRun(t, lateRun.ID).Status, store.StatusCompleted)
	checkEqual(t, "recent run", b.getRun(t, recentRun.ID).Status, store.StatusCompleted)

	if n := b.prune(t, cutoff, 100); n != 0 {
		t.Errorf("second Prune removed %d rows, want 0", n)
	}
}

func testPruneBatch(t *testing.T, b *bundle) {
	const runs, batch = 10, 3
	for range runs {
		b.enqueueOne(t, "fn-a")
	}
	ls := b.claim(t, "w", 100, time.Hour)
	if len(ls) != runs {
		t.Fatalf("Claim = %d leases, want %d", len(ls), runs)
	}
	for i := range ls {
		b.finish(t, &ls[i], store.Outcome{Status: store.StatusCompleted})
	}
	b.clock.Advance(2 * time.Hour)
	cutoff := b.now().Add(-time.Hour)

	total := 0
	for calls := 0; ; calls++ {
		if calls > 4*runs {
			t.Fatalf("Prune still removing after %d calls", calls)
		}
		n := b.prune(t, cutoff, batch)
		if n > 2*batch {
			t.Errorf("Prune(batch %d) removed %d rows, want at most %d (batch runs and batch events)", batch, n, 2*batch)
		}
		if n == 0 {
			break
		}
		total += n
	}
	if total < 2*runs {
		t.Errorf("Prune removed %d rows in all, want at least %d", total, 2*runs)
	}
	if rs := b.allRuns(t, store.RunFilter{}); len(rs) != 0 {
		t.Errorf("runs left after pruning = %v", runIDs(rs))
	}
	if es := b.allEvents(t, store.EventFilter{}); len(es) != 0 {
		t.Errorf("events left after pruning = %v", eventIDs(es))
	}
}

func testPruneKeys(t *testing.T, b *bundle) {
	b.kvSet(t, "temp", "1", time.Minute)
	b.kvSet(t, "perm", "1", 0)
	b.incr(t, "counter", 5, 0)
	b.setAdd(t, "tempset", time.Minute, "a")
	b.setAdd(t, "permset", 0, "a", "b")
	b.kvSet(t, "live", "1", 3*time.Hour)
	b.clock.Advance(2 * time.Hour)

	b.prune(t, b.now().Add(-time.Hour), 100)
	// Keys without a ttl are the site's data: never pruned, however old.
	checkEqual(t, "perm", b.kvGet(t, "perm"), "1")
	checkEqual(t, "counter", b.kvGet(t, "counter"), "5")
	checkEqual(t, "live", b.kvGet(t, "live"), "1")
	checkEqual(t, "SetCard(permset)", b.setCard(t, "permset"), 2)
	_, err := b.store.Get(b.ctx, "temp")
	wantErr(t, "Get(expired)", err, store.ErrNotFound)
	checkEqual(t, "SetCard(expired set)", b.setCard(t, "tempset"), 0)
	checkIDs(t, "keys after Prune", b.scanAll(t, "", 100), []string{"counter", "live", "perm", "permset"})

	// An expired key, pruned or not, is free for reuse.
	if ok, err := b.store.SetNX(b.ctx, "temp", "2", 0); err != nil || !ok {
		t.Errorf("SetNX(pruned key) = %v, %v; want true, nil", ok, err)
	}
	checkEqual(t, "temp", b.kvGet(t, "temp"), "2")
}

// testPruneFunction: a function's own retention removes its completed
// runs that ended before the cutoff, with the events left without a run;
// failed runs, other functions' runs and the events they hold stay.
func testPruneFunction(t *testing.T, b *bundle) {
	shared, sharedA, sharedB := b.event("app/shared", `{}`), b.spec("fn-a"), b.spec("fn-b")
	b.publishOne(t, shared, sharedA, sharedB)
	// An event whose first run (sharing its id, store.RunSpec.ID) is
	// still queued when its second, of fn-a, is pruned: the event stays.
	kept, keptB, keptA := b.event("app/kept", `{}`), b.spec("fn-b"), b.spec("fn-a")
	kept.ID = keptB.ID
	keptB.AvailableAt = start.Add(3 * time.Hour)
	b.publishOne(t, kept, keptB, keptA)
	for _, l := range b.claim(t, "w", 10, time.Hour) {
		b.finish(t, &l, store.Outcome{Status: store.StatusCompleted})
	}
	own, ownRun := b.event("app/own", `{}`), b.spec("fn-a")
	b.publishOne(t, own, ownRun)
	l := b.claimOne(t, "w", ownRun.ID, time.Hour)
	b.saveStep(t, l, b.doneStep(l, "s"))
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted})
	failed, failedRun := b.event("app/failed", `{}`), b.spec("fn-a")
	b.publishOne(t, failed, failedRun)
	l = b.claimOne(t, "w", failedRun.ID, time.Hour)
	b.finish(t, l, store.Outcome{Status: store.StatusFailed, Error: "boom"})

	b.clock.Advance(2 * time.Hour)
	late, lateRun := b.event("app/late", `{}`), b.spec("fn-a")
	b.publishOne(t, late, lateRun)
	b.complete(t, lateRun.ID)

	n, err := b.store.PruneFunction(b.ctx, "fn-a", start.Add(time.Hour), 100)
	if err != nil {
		t.Fatalf("PruneFunction: %v", err)
	}
	if n != 4 {
		t.Errorf("PruneFunction removed %d, want 4 (three runs and one event)", n)
	}
	for _, id := range []string{sharedA.ID, ownRun.ID, keptA.ID} {
		_, err := b.store.GetRun(b.ctx, id)
		wantErr(t, "GetRun(pruned "+id+")", err, store.ErrNotFound)
	}
	_, err = b.store.GetEvent(b.ctx, own.ID)
	wantErr(t, "GetEvent(event left without a run)", err, store.ErrNotFound)
	b.getRun(t, sharedB.ID)
	b.getRun(t, failedRun.ID)
	b.getRun(t, lateRun.ID)
	b.getEvent(t, shared.ID)
	b.getEvent(t, failed.ID)
	b.getEvent(t, late.ID)
	b.getEvent(t, kept.ID)
	checkEqual(t, "queued run of an event pruned of its other run", b.getRun(t, keptB.ID).Status, store.StatusQueued)
	b.clock.Advance(time.Hour)
	if l := b.claimOne(t, "w", keptB.ID, time.Hour); string(l.Event.Data) != `{}` {
		t.Errorf("claimed %s with its event's data %s, want {}", keptB.ID, l.Event.Data)
	}
	_, err = b.store.Steps(b.ctx, ownRun.ID)
	wantErr(t, "Steps(pruned run)", err, store.ErrNotFound)
	if n, err := b.store.PruneFunction(b.ctx, "fn-a", start.Add(time.Hour), 100); err != nil || n != 0 {
		t.Errorf("second PruneFunction = %d, %v; want 0", n, err)
	}
	all := b.allRuns(t, store.RunFilter{FunctionID: "fn-a"})
	checkEqual(t, "fn-a runs listed after PruneFunction", len(all), 2)
}
