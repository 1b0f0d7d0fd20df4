package storetest

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var queueCases = []testCase{
	{"ClaimSetsLease", testClaimSetsLease},
	{"PublishLeasesWhatMayStartNow", pinned(testPublishLeases)},
	{"ClaimOnlyAvailable", testClaimOnlyAvailable},
	{"ClaimOldestFirstAtMostN", testClaimOldestFirst},
	{"LeaseBlocksOthersUntilItLapses", testLeaseLapse},
	{"LapsedLeaseIsLost", testLapsedLeaseIsLost},
	{"TakenOver", testTakenOver},
	{"RenewLease", testRenewLease},
	{"RenewLeasesEachOnItsOwn", testRenewLeases},
	{"ConcurrencyLimit", pinned(testConcurrencyLimit)},
	{"ConcurrencyLapsedLease", pinned(testConcurrencyLapsedLease)},
	{"FinishBy", testFinishBy},
	{"SuspendSleeping", testSuspendSleeping},
	{"SuspendRetryAndQueued", testSuspendRetry},
	{"FinishCompleted", testFinishCompleted},
	{"FinishFailedEmits", testFinishFailedEmits},
	{"Release", testRelease},
	{"CancelRun", pinned(testCancelRun)},
	{"CancelLeasedRun", pinned(testCancelLeasedRun)},
	{"NextWake", pinned(testNextWake)},
	{"QueueDepth", testQueueDepth},
	{"InvalidRequests", testQueueInvalid},
}

// doneStep is a completed step of the leased run.
func (b *bundle) doneStep(l *store.Lease, id string) store.Step {
	now := b.now()
	return store.Step{
		RunID:     l.RunID,
		ID:        id,
		Name:      id,
		Kind:      store.StepRun,
		Status:    store.StatusCompleted,
		Attempts:  []store.Attempt{{StartedAt: now, EndedAt: now}},
		Output:    json.RawMessage(`"done"`),
		StartedAt: now,
		EndedAt:   now,
	}
}

// checkLeaseLost expects every call with the lease l to be refused with
// ErrLeaseLost and to change nothing.
func checkLeaseLost(t *testing.T, b *bundle, what string, l *store.Lease) {
	t.Helper()
	before := b.getRun(t, l.RunID)
	steps := len(b.steps(t, l.RunID))
	emitted := b.event("app/emitted", `{}`)
	emittedRun := b.spec("fn-emitted")
	emit := []store.Publication{{Event: emitted, Runs: []store.RunSpec{emittedRun}}}

	wantErr(t, what+": RenewLease", b.renew(l, time.Minute), store.ErrLeaseLost)
	wantErr(t, what+": SaveStep", b.store.SaveStep(b.ctx, l, b.doneStep(l, "lost-step"), emit), store.ErrLeaseLost)
	wantErr(t, what+": Suspend", b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: b.now().Add(time.Hour)}), store.ErrLeaseLost)
	wantErr(t, what+": Release", b.store.Release(b.ctx, l), store.ErrLeaseLost)
	wantErr(t, what+": Finish", b.store.Finish(b.ctx, l, store.Outcome{Status: store.StatusFailed, Error: "late", Emit: emit}), store.ErrLeaseLost)

	after := b.getRun(t, l.RunID)
	checkEqual(t, what+": Status after refused calls", after.Status, before.Status)
	checkEqual(t, what+": LeaseOwner after refused calls", after.LeaseOwner, before.LeaseOwner)
	checkTime(t, what+": AvailableAt after refused calls", after.AvailableAt, before.AvailableAt)
	checkEqual(t, what+": Error after refused calls", after.Error, before.Error)
	checkEqual(t, what+": step count after refused calls", len(b.steps(t, l.RunID)), steps)
	_, err := b.store.GetEvent(b.ctx, emitted.ID)
	wantErr(t, what+": GetEvent of an event emitted with a lost lease", err, store.ErrNotFound)
	_, err = b.store.GetRun(b.ctx, emittedRun.ID)
	wantErr(t, what+": GetRun of a run emitted with a lost lease", err, store.ErrNotFound)
}

func testClaimSetsLease(t *testing.T, b *bundle) {
	ev := b.event("app/claim", `{}`)
	s := b.spec("fn-a")
	b.publishOne(t, ev, s)
	b.clock.Advance(time.Second)

	ls := b.claim(t, "worker-1", 1, 30*time.Second)
	if len(ls) != 1 {
		t.Fatalf("Claim = %v, want one lease", leaseIDs(ls))
	}
	l := ls[0]
	checkEqual(t, "Lease.RunID", l.RunID, s.ID)
	if l.Token == "" {
		t.Errorf("Lease.Token is empty")
	}
	checkEqual(t, "Lease.Owner", l.Owner, "worker-1")
	checkTime(t, "Lease.Until", l.Until, b.now().Add(30*time.Second))
	checkEqual(t, "Lease.Run.ID", l.Run.ID, s.ID)
	checkEqual(t, "Lease.Run.FunctionID", l.Run.FunctionID, "fn-a")
	checkEqual(t, "Lease.Run.EventID", l.Run.EventID, ev.ID)
	checkEqual(t, "Lease.Run.Status", l.Run.Status, store.StatusRunning)
	checkTime(t, "Lease.Run.StartedAt", l.Run.StartedAt, b.now())
	checkEqual(t, "Lease.Run.LeaseOwner", l.Run.LeaseOwner, "worker-1")
	checkEqual(t, "len(Lease.Steps)", len(l.Steps), 0)
	// The trigger event comes with the lease, as GetEvent returns it, so
	// a worker need not read it again.
	stored := b.getEvent(t, ev.ID)
	checkEqual(t, "Lease.Event.ID", l.Event.ID, ev.ID)
	checkEqual(t, "Lease.Event.Name", l.Event.Name, ev.Name)
	checkJSON(t, "Lease.Event.Data", l.Event.Data, ev.Data)
	checkEqual(t, "Lease.Event.TS", l.Event.TS, stored.TS)
	checkTime(t, "Lease.Event.ReceivedAt", l.Event.ReceivedAt, stored.ReceivedAt)

	r := b.getRun(t, s.ID)
	checkEqual(t, "Status", r.Status, store.StatusRunning)
	checkTime(t, "StartedAt", r.StartedAt, b.now())
	checkTime(t, "AvailableAt (lease expiry)", r.AvailableAt, b.now().Add(30*time.Second))
	checkEqual(t, "LeaseOwner", r.LeaseOwner, "worker-1")
	checkTime(t, "EndedAt", r.EndedAt, time.Time{})
}

func testClaimOnlyAvailable(t *testing.T, b *bundle) {
	now := b.now()
	s1, s2, s3 := b.spec("fn-a"), b.spec("fn-a"), b.spec("fn-a")
	s2.AvailableAt = now.Add(time.Minute)
	s3.AvailableAt = now.Add(2 * time.Minute)
	b.enqueue(t, s3, s2, s1)

	b.claimOne(t, "w", s1.ID, time.Hour)
	b.claimNone(t, "w")
	b.clock.Advance(time.Minute) // exactly s2's AvailableAt: claimable
	b.claimOne(t, "w", s2.ID, time.Hour)
	b.clock.Advance(59 * time.Second)
	b.claimNone(t, "w")
	b.clock.Advance(time.Second)
	b.claimOne(t, "w", s3.ID, time.Hour)
}

func testClaimOldestFirst(t *testing.T, b *bundle) {
	bySecond := map[int]string{}
	var specs []store.RunSpec
	for _, sec := range []int{3, 1, 2, 4} {
		s := b.spec("fn-a")
		s.AvailableAt = b.now().Add(time.Duration(sec) * time.Second)
		bySecond[sec] = s.ID
		specs = append(specs, s)
	}
	b.enqueue(t, specs...)
	b.clock.Advance(10 * time.Second)

	checkIDs(t, "first claim of 2", leaseIDs(b.claim(t, "w", 2, time.Hour)), []string{bySecond[1], bySecond[2]})
	checkIDs(t, "second claim of 2", leaseIDs(b.claim(t, "w", 2, time.Hour)), []string{bySecond[3], bySecond[4]})
	b.claimNone(t, "w")
}

func testLeaseLapse(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	b.clock.Advance(time.Second)
	started := b.now()
	a := b.claimOne(t, "a", id, 30*time.Second)

	b.claimNone(t, "b")
	b.clock.Advance(29 * time.Second)
	b.claimNone(t, "b")
	b.clock.Advance(2 * time.Second)
	l := b.claimOne(t, "b", id, 30*time.Second)
	if l.Token == a.Token {
		t.Errorf("the new lease has the lapsed lease's token %q", l.Token)
	}
	checkEqual(t, "new Lease.Owner", l.Owner, "b")
	checkTime(t, "new Lease.Until", l.Until, b.now().Add(30*time.Second))
	// Decision: StartedAt is the first start; a takeover keeps it.
	checkTime(t, "StartedAt after takeover", l.Run.StartedAt, started)
	checkEqual(t, "LeaseOwner after takeover", b.getRun(t, id).LeaseOwner, "b")

	checkLeaseLost(t, b, "taken-over lease", a)
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted})
	checkEqual(t, "Status", b.getRun(t, id).Status, store.StatusCompleted)
}

func testLapsedLeaseIsLost(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	a := b.claimOne(t, "a", id, 30*time.Second)
	b.clock.Advance(31 * time.Second)
	// Nobody took the run over, but the lease expired: ErrLeaseLost says
	// so, and the run waits for the next claim.
	wantErr(t, "RenewLease of a lapsed lease", b.renew(a, time.Minute), store.ErrLeaseLost)
	wantErr(t, "Finish with a lapsed lease", b.store.Finish(b.ctx, a, store.Outcome{Status: store.StatusCompleted}), store.ErrLeaseLost)
	checkEqual(t, "Status", b.getRun(t, id).Status, store.StatusRunning)
	b.claimOne(t, "b", id, 30*time.Second)
}

// testTakenOver: Lease.TakenOver is true only when the claim took the run
// from a lapsed lease, not for a queued, suspended or released run.
func testTakenOver(t *testing.T, b *bundle) {
	// A fresh run: no lease to take over.
	id := b.enqueueOne(t, "fn-a")
	a := b.claimOne(t, "a", id, 5*time.Second)
	checkEqual(t, "TakenOver of a fresh claim", a.TakenOver, false)

	// Its lease lapses and another worker claims it: a takeover.
	b.clock.Advance(5*time.Second + time.Millisecond)
	l := b.claimOne(t, "b", id, 5*time.Second)
	checkEqual(t, "TakenOver of a lapsed lease", l.TakenOver, true)

	// Taken over again, from the worker that took it over.
	b.clock.Advance(6 * time.Second)
	l = b.claimOne(t, "c", id, time.Minute)
	checkEqual(t, "TakenOver of a lapsed takeover", l.TakenOver, true)

	// Suspended, then claimed when due: no lease was held.
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: b.now().Add(time.Second)}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	b.clock.Advance(time.Second)
	l = b.claimOne(t, "d", id, time.Minute)
	checkEqual(t, "TakenOver after Suspend", l.TakenOver, false)

	// Released, then claimed: no lease was held.
	if err := b.store.Release(b.ctx, l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	l = b.claimOne(t, "e", id, time.Minute)
	checkEqual(t, "TakenOver after Release", l.TakenOver, false)
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted})

	// Several runs in one claim: each says whether it was taken over.
	lapsed := b.enqueueOne(t, "fn-a")
	b.claimOne(t, "a", lapsed, time.Second)
	b.clock.Advance(2 * time.Second)
	queued := b.enqueueOne(t, "fn-a")
	ls := b.claim(t, "b", 2, time.Minute)
	if len(ls) != 2 {
		t.Fatalf("Claim = %v, want two leases", leaseIDs(ls))
	}
	for _, l := range ls {
		checkEqual(t, "TakenOver of "+l.RunID, l.TakenOver, l.RunID == lapsed)
	}
	checkIDs(t, "claimed", leaseIDs(ls), []string{lapsed, queued})
}

func testRenewLease(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	t0 := b.now()
	a := b.claimOne(t, "a", id, 30*time.Second)
	b.clock.Advance(20 * time.Second)
	if err := b.renew(a, 30*time.Second); err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	// Decision: RenewLease updates the caller's Lease.Until.
	checkTime(t, "Lease.Until after renew", a.Until, t0.Add(50*time.Second))
	checkTime(t, "AvailableAt after renew", b.getRun(t, id).AvailableAt, t0.Add(50*time.Second))

	b.clock.Advance(20 * time.Second) // past the first expiry, before the new one
	b.claimNone(t, "b")
	if err := b.store.SaveStep(b.ctx, a, b.doneStep(a, "s1"), nil); err != nil {
		t.Fatalf("SaveStep with a renewed lease: %v", err)
	}
	b.clock.Advance(11 * time.Second)
	b.claimOne(t, "b", id, 30*time.Second)
	wantErr(t, "RenewLease after takeover", b.renew(a, 30*time.Second), store.ErrLeaseLost)
}

// renew renews one lease through RenewLeases.
func (b *bundle) renew(l *store.Lease, ttl time.Duration) error {
	errs, err := b.store.RenewLeases(b.ctx, []*store.Lease{l}, ttl)
	if err != nil {
		return err
	}
	return errs[0]
}

// testRenewLeases: one call renews several leases; a lost one is reported
// and left alone, the others are renewed.
func testRenewLeases(t *testing.T, b *bundle) {
	ids := []string{b.enqueueOne(t, "fn-a"), b.enqueueOne(t, "fn-a"), b.enqueueOne(t, "fn-a")}
	t0 := b.now()
	ls := b.claim(t, "a", 3, 30*time.Second)
	checkIDs(t, "claimed", leaseIDs(ls), ids)
	if _, err := b.store.CancelRun(b.ctx, ids[1], "gone"); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	b.clock.Advance(20 * time.Second)
	errs, err := b.store.RenewLeases(b.ctx, []*store.Lease{&ls[0], &ls[1], &ls[2]}, 30*time.Second)
	if err != nil {
		t.Fatalf("RenewLeases: %v", err)
	}
	checkEqual(t, "results", len(errs), 3)
	wantErr(t, "renewal of the cancelled run", errs[1], store.ErrLeaseLost)
	checkEqual(t, "status of the cancelled run", b.getRun(t, ids[1]).Status, store.StatusCancelled)
	for _, i := range []int{0, 2} {
		if errs[i] != nil {
			t.Errorf("renewal of %s: %v", ids[i], errs[i])
		}
		checkTime(t, "Lease.Until after renew", ls[i].Until, t0.Add(50*time.Second))
		checkTime(t, "AvailableAt after renew", b.getRun(t, ids[i]).AvailableAt, t0.Add(50*time.Second))
	}
	b.clock.Advance(20 * time.Second) // past the first expiry, before the new one
	b.claimNone(t, "b")
	errs, err = b.store.RenewLeases(b.ctx, nil, 30*time.Second)
	if err != nil || len(errs) != 0 {
		t.Errorf("RenewLeases of no lease = %v, %v; want none, nil", errs, err)
	}
}

func testConcurrencyLimit(t *testing.T, b *bundle) {
	mk := func(key string) string {
		b.clock.Advance(time.Millisecond)
		s := b.spec("fn-a")
		if key != "" {
			s.ConcurrencyKey = key
			s.ConcurrencyLimit = 2
		}
		return b.enqueue(t, s)[0].ID
	}
	k1, k2, k3, o1, o2, f := mk("k"), mk("k"), mk("k"), mk("o"), mk("o"), mk("")

	leases := map[string]*store.Lease{}
	ls := b.claim(t, "w1", 10, time.Hour)
	for i := range ls {
		leases[ls[i].RunID] = &ls[i]
	}
	got := leaseIDs(ls)
	want := []string{k1, k2, o1, o2, f}
	slices.Sort(got)
	slices.Sort(want)
	checkIDs(t, "first claim (k3 held back)", got, want)
	b.claimNone(t, "w2")

	// A run blocked by its key does not block the runs behind it.
	f2 := mk("")
	checkIDs(t, "claim of 1 behind a blocked run", leaseIDs(b.claim(t, "w2", 1, time.Hour)), []string{f2})
	b.claimNone(t, "w2")

	// Finishing one frees its slot.
	b.finish(t, leases[k1], store.Outcome{Status: store.StatusCompleted})
	b.claimOne(t, "w2", k3, time.Hour)

	// A suspended run holds no slot.
	k4 := mk("k")
	b.claimNone(t, "w2")
	if err := b.store.Suspend(b.ctx, leases[k2], store.Suspension{Status: store.StatusSleeping, AvailableAt: b.now().Add(time.Hour)}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	b.claimOne(t, "w2", k4, time.Hour)
	b.claimNone(t, "w2")
}

func testConcurrencyLapsedLease(t *testing.T, b *bundle) {
	mk := func() string {
		b.clock.Advance(time.Millisecond)
		s := b.spec("fn-a")
		s.ConcurrencyKey = "k"
		s.ConcurrencyLimit = 1
		return b.enqueue(t, s)[0].ID
	}
	r1, r2 := mk(), mk()
	a := b.claimOne(t, "a", r1, 30*time.Second)
	b.claimNone(t, "b")
	// A crashed worker's lapsed lease holds no slot: one of the two runs
	// (either) can be claimed, and only one.
	b.clock.Advance(31 * time.Second)
	ls := b.claim(t, "b", 10, time.Minute)
	if len(ls) != 1 || (ls[0].RunID != r1 && ls[0].RunID != r2) {
		t.Fatalf("Claim after the lease lapsed = %v, want one of %s, %s", leaseIDs(ls), r1, r2)
	}
	b.claimNone(t, "c")
	wantErr(t, "RenewLease of the lapsed lease", b.renew(a, time.Minute), store.ErrLeaseLost)
}

func testFinishBy(t *testing.T, b *bundle) {
	s, plain := b.spec("fn-a"), b.spec("fn-a")
	s.FinishTimeout = 10 * time.Minute
	b.enqueue(t, s, plain)
	b.clock.Advance(5 * time.Second)
	started := b.now()
	ls := b.claim(t, "w", 10, 30*time.Second)
	if len(ls) != 2 {
		t.Fatalf("Claim = %v, want both runs", leaseIDs(ls))
	}
	for _, l := range ls {
		want := time.Time{}
		if l.RunID == s.ID {
			want = started.Add(10 * time.Minute)
		}
		checkTime(t, "Lease.Run.FinishBy", l.Run.FinishBy, want)
		checkTime(t, "FinishBy", b.getRun(t, l.RunID).FinishBy, want)
	}

	// FinishBy is set on the first claim only.
	b.clock.Advance(31 * time.Second)
	for _, l := range b.claim(t, "w2", 10, 30*time.Second) {
		if l.RunID == s.ID {
			checkTime(t, "FinishBy after takeover", l.Run.FinishBy, started.Add(10*time.Minute))
			checkTime(t, "StartedAt after takeover", l.Run.StartedAt, started)
		}
	}
}

func testSuspendSleeping(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	started := b.now()
	l := b.claimOne(t, "a", id, time.Minute)
	wake := b.now().Add(10 * time.Minute)
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: wake}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	r := b.getRun(t, id)
	checkEqual(t, "Status", r.Status, store.StatusSleeping)
	checkTime(t, "AvailableAt", r.AvailableAt, wake)
	checkEqual(t, "LeaseOwner", r.LeaseOwner, "")
	checkTime(t, "StartedAt", r.StartedAt, started)
	b.claimNone(t, "b")
	checkLeaseLost(t, b, "suspended lease", l)

	b.clock.Advance(10*time.Minute - time.Millisecond)
	b.claimNone(t, "b")
	b.clock.Advance(time.Millisecond)
	l2 := b.claimOne(t, "b", id, time.Minute)
	checkEqual(t, "Status when claimed again", l2.Run.Status, store.StatusRunning)
	checkTime(t, "StartedAt when claimed again", l2.Run.StartedAt, started)
}

func testSuspendRetry(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "a", id, time.Minute)
	retryAt := b.now().Add(15 * time.Second)
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusRunning, AvailableAt: retryAt, Attempt: 1}); err != nil {
		t.Fatalf("Suspend for retry: %v", err)
	}
	r := b.getRun(t, id)
	checkEqual(t, "Status while waiting to retry", r.Status, store.StatusRunning)
	checkEqual(t, "Attempt", r.Attempt, 1)
	checkTime(t, "AvailableAt", r.AvailableAt, retryAt)
	checkEqual(t, "LeaseOwner", r.LeaseOwner, "")
	b.claimNone(t, "b")
	b.clock.Advance(15 * time.Second)
	l2 := b.claimOne(t, "b", id, time.Minute)
	checkEqual(t, "Lease.Run.Attempt", l2.Run.Attempt, 1)

	// Suspended Queued with a time already past: claimable at once.
	if err := b.store.Suspend(b.ctx, l2, store.Suspension{Status: store.StatusQueued, AvailableAt: b.now().Add(-time.Minute), Attempt: 2}); err != nil {
		t.Fatalf("Suspend queued: %v", err)
	}
	r = b.getRun(t, id)
	checkEqual(t, "Status after Suspend(Queued)", r.Status, store.StatusQueued)
	checkEqual(t, "Attempt after Suspend(Queued)", r.Attempt, 2)
	b.claimOne(t, "c", id, time.Minute)
}

func testFinishCompleted(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	started := b.now()
	l := b.claimOne(t, "w", id, time.Minute)
	b.clock.Advance(2 * time.Second)
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`{"sent": 3}`)})

	r := b.getRun(t, id)
	checkEqual(t, "Status", r.Status, store.StatusCompleted)
	checkJSON(t, "Output", r.Output, []byte(`{"sent":3}`))
	checkEqual(t, "Error", r.Error, "")
	checkTime(t, "StartedAt", r.StartedAt, started)
	checkTime(t, "EndedAt", r.EndedAt, b.now())
	checkTime(t, "AvailableAt", r.AvailableAt, time.Time{})
	checkEqual(t, "LeaseOwner", r.LeaseOwner, "")
	b.claimNone(t, "w")
	checkLeaseLost(t, b, "finished run's lease", l)
	_, err := b.store.CancelRun(b.ctx, id, "too late")
	wantErr(t, "CancelRun(completed)", err, store.ErrFinished)

	// The Cancelled outcome (finish timeout) ends a run too.
	id2 := b.enqueueOne(t, "fn-a")
	l2 := b.claimOne(t, "w", id2, time.Minute)
	b.finish(t, l2, store.Outcome{Status: store.StatusCancelled, Error: "finish timeout"})
	r = b.getRun(t, id2)
	checkEqual(t, "Status", r.Status, store.StatusCancelled)
	checkEqual(t, "Error", r.Error, "finish timeout")
	checkTime(t, "EndedAt", r.EndedAt, b.now())
}

func testFinishFailedEmits(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	b.clock.Advance(time.Second)
	failed := b.event("cyberdrew/function.failed", `{"function_id":"fn-a","run_id":"`+id+`","error":"boom"}`)
	hook := b.spec("fn-a-failure")
	b.finish(t, l, store.Outcome{
		Status: store.StatusFailed,
		Error:  "boom",
		Emit:   []store.Publication{{Event: failed, Runs: []store.RunSpec{hook}}},
	})

	r := b.getRun(t, id)
	checkEqual(t, "Status", r.Status, store.StatusFailed)
	checkEqual(t, "Error", r.Error, "boom")
	checkTime(t, "EndedAt", r.EndedAt, b.now())
	e := b.getEvent(t, failed.ID)
	checkEqual(t, "emitted event Name", e.Name, failed.Name)
	checkJSON(t, "emitted event Data", e.Data, failed.Data)
	checkTime(t, "emitted event ReceivedAt", e.ReceivedAt, b.now())
	h := b.getRun(t, hook.ID)
	checkEqual(t, "failure hook Status", h.Status, store.StatusQueued)
	checkEqual(t, "failure hook EventID", h.EventID, failed.ID)
	b.claimOne(t, "w", hook.ID, time.Hour)
}

func testRelease(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	started := b.now()
	l := b.claimOne(t, "a", id, time.Hour)
	b.clock.Advance(time.Second)
	if err := b.store.Release(b.ctx, l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// Decision: Release leaves Status, StartedAt and Attempt as they were
	// (Running: the run has started) and only drops the lease.
	r := b.getRun(t, id)
	checkEqual(t, "Status", r.Status, store.StatusRunning)
	checkEqual(t, "LeaseOwner", r.LeaseOwner, "")
	checkTime(t, "AvailableAt", r.AvailableAt, b.now())
	checkTime(t, "StartedAt", r.StartedAt, started)
	checkEqual(t, "Attempt", r.Attempt, 0)
	b.claimOne(t, "b", id, time.Hour)
	checkLeaseLost(t, b, "released lease", l)
}

func testCancelRun(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	b.clock.Advance(time.Second)
	r, err := b.store.CancelRun(b.ctx, id, "no longer needed")
	if err != nil {
		t.Fatalf("CancelRun(queued): %v", err)
	}
	checkEqual(t, "returned Status", r.Status, store.StatusCancelled)
	checkTime(t, "returned EndedAt", r.EndedAt, b.now())
	// Decision: the cancel reason is the run's Error.
	checkEqual(t, "returned Error", r.Error, "no longer needed")
	got := b.getRun(t, id)
	checkEqual(t, "Status", got.Status, store.StatusCancelled)
	checkTime(t, "EndedAt", got.EndedAt, b.now())
	checkTime(t, "AvailableAt", got.AvailableAt, time.Time{})
	b.claimNone(t, "w")

	_, err = b.store.CancelRun(b.ctx, id, "again")
	wantErr(t, "CancelRun(cancelled)", err, store.ErrFinished)
	checkEqual(t, "Error after second cancel", b.getRun(t, id).Error, "no longer needed")
	_, err = b.store.CancelRun(b.ctx, b.id(), "who?")
	wantErr(t, "CancelRun(unknown)", err, store.ErrNotFound)

	// A sleeping run can be cancelled, and never wakes.
	sleeper := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", sleeper, time.Minute)
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: b.now().Add(time.Minute)}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	if _, err := b.store.CancelRun(b.ctx, sleeper, "stop"); err != nil {
		t.Fatalf("CancelRun(sleeping): %v", err)
	}
	checkEqual(t, "Status of cancelled sleeper", b.getRun(t, sleeper).Status, store.StatusCancelled)
	b.clock.Advance(time.Hour)
	b.claimNone(t, "w")

	// A cancelled run no longer holds its singleton key.
	single := b.spec("fn-a")
	single.SingletonKey = "s"
	b.enqueue(t, single)
	if _, err := b.store.CancelRun(b.ctx, single.ID, "stop"); err != nil {
		t.Fatalf("CancelRun(singleton): %v", err)
	}
	next := b.spec("fn-a")
	next.SingletonKey = "s"
	checkEqual(t, "singleton after cancel", b.enqueue(t, next)[0].Status, store.StatusQueued)
}

func testCancelLeasedRun(t *testing.T, b *bundle) {
	mk := func() string {
		b.clock.Advance(time.Millisecond)
		s := b.spec("fn-a")
		s.ConcurrencyKey = "k"
		s.ConcurrencyLimit = 1
		return b.enqueue(t, s)[0].ID
	}
	r1, r2 := mk(), mk()
	l := b.claimOne(t, "w", r1, time.Hour)
	r, err := b.store.CancelRun(b.ctx, r1, "by hand")
	if err != nil {
		t.Fatalf("CancelRun(leased): %v", err)
	}
	checkEqual(t, "Status", r.Status, store.StatusCancelled)
	checkEqual(t, "LeaseOwner", r.LeaseOwner, "")
	checkLeaseLost(t, b, "cancelled run's lease", l)
	checkEqual(t, "Status after the holder's refused calls", b.getRun(t, r1).Status, store.StatusCancelled)
	// Its concurrency slot is free.
	b.claimOne(t, "w2", r2, time.Hour)
}

func testNextWake(t *testing.T, b *bundle) {
	wake := func() (time.Time, bool) {
		t.Helper()
		at, ok, err := b.store.NextWake(b.ctx)
		if err != nil {
			t.Fatalf("NextWake: %v", err)
		}
		return at, ok
	}
	if at, ok := wake(); ok {
		t.Fatalf("NextWake on an empty store = %v, true; want false", fmtTime(at))
	}
	t0 := b.now()
	a, c := b.spec("fn-a"), b.spec("fn-a")
	a.AvailableAt = t0.Add(time.Minute)
	c.AvailableAt = t0.Add(5 * time.Minute)
	b.enqueue(t, c, a)
	// A skipped run is finished and never wakes.
	sk1, sk2 := b.spec("fn-a"), b.spec("fn-a")
	sk1.SingletonKey, sk2.SingletonKey = "s", "s"
	sk1.AvailableAt = t0.Add(time.Hour)
	b.enqueue(t, sk1, sk2)
	if _, err := b.store.CancelRun(b.ctx, sk1.ID, "not needed"); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}

	check := func(what string, want time.Time) {
		t.Helper()
		at, ok := wake()
		if !ok {
			t.Fatalf("%s: NextWake ok = false, want %v", what, fmtTime(want))
		}
		checkTime(t, what+": NextWake", at, want)
	}
	check("two queued", t0.Add(time.Minute))
	b.clock.Advance(time.Minute)
	la := b.claimOne(t, "w", a.ID, 10*time.Minute)
	check("one leased until +11m", t0.Add(5*time.Minute))
	b.clock.Advance(4 * time.Minute)
	lc := b.claimOne(t, "w", c.ID, 30*time.Second)
	check("lease of c", t0.Add(5*time.Minute+30*time.Second))
	b.finish(t, lc, store.Outcome{Status: store.StatusCompleted})
	check("lease of a", t0.Add(11*time.Minute))
	if err := b.store.Suspend(b.ctx, la, store.Suspension{Status: store.StatusSleeping, AvailableAt: t0.Add(2 * time.Hour)}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	check("sleeping", t0.Add(2*time.Hour))
	if _, err := b.store.CancelRun(b.ctx, a.ID, "done"); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	if at, ok := wake(); ok {
		t.Errorf("NextWake with only finished runs = %v, true; want false", fmtTime(at))
	}
}

func testQueueDepth(t *testing.T, b *bundle) {
	depth := func() int {
		t.Helper()
		n, err := b.store.QueueDepth(b.ctx)
		if err != nil {
			t.Fatalf("QueueDepth: %v", err)
		}
		return n
	}
	checkEqual(t, "QueueDepth of an empty store", depth(), 0)
	t0 := b.now()
	due1, due2, later := b.spec("fn-a"), b.spec("fn-a"), b.spec("fn-a")
	due2.AvailableAt = t0.Add(30 * time.Second)
	later.AvailableAt = t0.Add(time.Hour)
	b.enqueue(t, due1, due2, later)
	checkEqual(t, "QueueDepth with one due", depth(), 1)
	b.claimOne(t, "w", due1.ID, time.Minute)
	checkEqual(t, "QueueDepth with it leased", depth(), 0)
	b.clock.Advance(2 * time.Minute)
	checkEqual(t, "QueueDepth after the lease lapsed and another fell due", depth(), 2)
	if _, err := b.store.CancelRun(b.ctx, due2.ID, "done"); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	checkEqual(t, "QueueDepth after a cancel", depth(), 1)
}

func testQueueInvalid(t *testing.T, b *bundle) {
	_, err := b.store.Claim(b.ctx, "w", 1, 0)
	wantErr(t, "Claim with ttl 0", err, store.ErrInvalid)
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Minute)
	wantErr(t, "RenewLease with ttl 0", b.renew(l, 0), store.ErrInvalid)
	for _, st := range []store.Status{store.StatusQueued, store.StatusRunning, store.StatusSleeping, store.StatusSkipped, ""} {
		wantErr(t, "Finish as "+string(st), b.store.Finish(b.ctx, l, store.Outcome{Status: st}), store.ErrInvalid)
	}
	for _, st := range []store.Status{store.StatusCompleted, store.StatusFailed, store.StatusCancelled, store.StatusWaiting} {
		wantErr(t, "Suspend as "+string(st), b.store.Suspend(b.ctx, l, store.Suspension{Status: st, AvailableAt: b.now()}), store.ErrInvalid)
	}
	wantErr(t, "Finish with output that is not JSON",
		b.store.Finish(b.ctx, l, store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`{"a":`)}), store.ErrInvalid)

	// Refused requests leave the run and the lease as they were.
	r := b.getRun(t, id)
	checkEqual(t, "Status", r.Status, store.StatusRunning)
	checkEqual(t, "LeaseOwner", r.LeaseOwner, "w")
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted})
}

// testPublishLeases: a spec asking for a lease (RunSpec.LeaseTo) is
// created leased when it may start now: Running, owned, started, with
// its event, the run as GetRun reads it, and no claim finds it; its lease
// renews and finishes as a claimed one. A run due later, one with a
// concurrency or debounce key, and one the rate limit skips are created
// as they would be without the request, and leave no lease.
func testPublishLeases(t *testing.T, b *bundle) {
	to := store.LeaseRequest{Owner: "pool-a", TTL: time.Minute}
	now := b.clock.Now()
	leased := b.spec("fn-a")
	leased.LeaseTo, leased.FinishTimeout, leased.IdempotencyKey, leased.IdempotencyTTL = to, time.Hour, "idem-1", time.Hour
	later := b.spec("fn-a")
	later.LeaseTo, later.AvailableAt = to, now.Add(time.Hour)
	keyed := b.spec("fn-a")
	keyed.LeaseTo, keyed.ConcurrencyKey, keyed.ConcurrencyLimit = to, "k", 5
	debounced := b.spec("fn-a")
	debounced.LeaseTo, debounced.DebounceKey, debounced.DebouncePeriod = to, "d", time.Minute
	limited := func() store.RunSpec {
		s := b.spec("fn-b")
		s.LeaseTo, s.RateLimitKey, s.RateLimit, s.RateLimitPeriod = to, "rl", 1, time.Hour
		return s
	}
	first, second := limited(), limited()
	pub := b.publishOne(t, b.event("test/lease", `{"n":1}`), leased, later, keyed, debounced, first, second)
	if len(pub.Runs) != 6 {
		t.Fatalf("Publish returned %d run refs, want 6", len(pub.Runs))
	}
	ref := pub.Runs[0]
	if ref.Lease == nil || ref.Status != store.StatusRunning {
		t.Fatalf("the spec that may start now: %+v, want Running with a lease", ref)
	}
	l := ref.Lease
	if l.RunID != leased.ID || l.Owner != "pool-a" || l.Token == "" || !l.Until.Equal(now.Add(time.Minute)) || l.TakenOver || len(l.Steps) != 0 {
		t.Errorf("lease = %+v, want pool-a's until %v, with a token", l, now.Add(time.Minute))
	}
	if l.Event.ID != pub.EventID || string(l.Event.Data) != `{"n":1}` || l.Event.Name != "test/lease" {
		t.Errorf("lease event = %+v, want the published event", l.Event)
	}
	got := b.getRun(t, leased.ID)
	if !reflect.DeepEqual(got, l.Run) {
		t.Errorf("the lease's run differs from GetRun's:\n lease %+v\n get   %+v", l.Run, got)
	}
	if got.Status != store.StatusRunning || got.LeaseOwner != "pool-a" || !got.StartedAt.Equal(got.CreatedAt) ||
		!got.AvailableAt.Equal(l.Until) || !got.FinishBy.Equal(got.StartedAt.Add(time.Hour)) {
		t.Errorf("leased run = %+v, want Running, owned by pool-a, started when created, due to finish an hour later", got)
	}
	for i, want := range []store.Status{store.StatusQueued, store.StatusQueued, store.StatusQueued, store.StatusRunning, store.StatusSkipped} {
		r := pub.Runs[i+1]
		if r.Status != want || (want == store.StatusRunning) != (r.Lease != nil) {
			t.Errorf("ref %d = %+v (lease %v), want %s", i+1, r, r.Lease != nil, want)
		}
	}
	// A claim finds the keyed run (the debounced and later ones are not
	// due yet), never the leased one.
	b.claimOne(t, "w", keyed.ID, time.Minute)
	idem := b.spec("fn-a")
	idem.IdempotencyKey, idem.IdempotencyTTL = "idem-1", time.Hour
	if r := b.enqueue(t, idem)[0]; r.Status != store.StatusSkipped || r.Skip != store.SkipIdempotency {
		t.Errorf("a second run with the leased run's idempotency key = %+v, want skipped", r)
	}

	b.clock.Advance(30 * time.Second)
	errs, err := b.store.RenewLeases(b.ctx, []*store.Lease{l}, time.Minute)
	if err != nil || errs[0] != nil {
		t.Fatalf("RenewLeases of a lease from Publish = %v, %v", errs, err)
	}
	if err := b.store.SaveStep(b.ctx, l, b.doneStep(l, "s1"), nil); err != nil {
		t.Fatalf("SaveStep under a lease from Publish: %v", err)
	}
	if err := b.store.Finish(b.ctx, l, store.Outcome{Status: store.StatusCompleted}); err != nil {
		t.Fatalf("Finish under a lease from Publish: %v", err)
	}
	checkEqual(t, "status after the finish", b.getRun(t, leased.ID).Status, store.StatusCompleted)
}
