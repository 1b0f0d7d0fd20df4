package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var flowCases = []testCase{
	{"Idempotency", pinned(testIdempotency)},
	{"SkippedRunHoldsNoKey", pinned(testSkippedRunHoldsNoKey)},
	{"RateLimit", pinned(testRateLimit)},
	{"Singleton", pinned(testSingleton)},
	{"Debounce", pinned(testDebounce)},
	{"DebounceWithoutMaxWait", pinned(testDebounceWithoutMaxWait)},
}

func testIdempotency(t *testing.T, b *bundle) {
	const ttl = time.Hour
	mk := func(key string) store.RunSpec {
		s := b.spec("fn-a")
		s.IdempotencyKey = key
		s.IdempotencyTTL = ttl
		return s
	}
	// skipped checks that spec's run is stored Skipped for event ev, with
	// the key and the run holding it as its error.
	skipped := func(what string, ref store.RunRef, spec store.RunSpec, ev, holder string) {
		t.Helper()
		checkRef(t, what, ref, store.RunRef{ID: spec.ID, FunctionID: "fn-a", Status: store.StatusSkipped, Skip: store.SkipIdempotency})
		r := b.getRun(t, spec.ID)
		checkEqual(t, what+": stored Status", r.Status, store.StatusSkipped)
		checkEqual(t, what+": Error", r.Error, `idempotency key "`+spec.IdempotencyKey+`" already used by run `+holder)
		checkEqual(t, what+": EventID", r.EventID, ev)
		checkTime(t, what+": EndedAt", r.EndedAt, b.now())
		checkTime(t, what+": AvailableAt", r.AvailableAt, time.Time{})
		checkIDs(t, what+": the event's runs", runIDs(b.allRuns(t, store.RunFilter{EventID: ev})), []string{spec.ID})
	}
	first := mk("order-1")
	e1 := b.event("app/order", `{"n":1}`)
	p := b.publishOne(t, e1, first)
	checkRef(t, "first", p.Runs[0], store.RunRef{ID: first.ID, FunctionID: "fn-a", Status: store.StatusQueued})

	// Decision: a second event with a live key is not dropped in silence:
	// its run is stored Skipped, naming the key and the run that holds it.
	b.clock.Advance(10 * time.Minute)
	second := mk("order-1")
	e2 := b.event("app/order", `{"n":2}`)
	p = b.publishOne(t, e2, second)
	checkEqual(t, "second event Duplicate", p.Duplicate, false)
	skipped("second", p.Runs[0], second, e2.ID, first.ID)
	b.getEvent(t, e2.ID) // the event itself is stored
	// The existing run is left as it was, and still holds the key.
	r := b.getRun(t, first.ID)
	checkEqual(t, "EventID", r.EventID, e1.ID)
	checkIDs(t, "EventIDs", r.EventIDs, []string{e1.ID})
	// Only the first run is claimable.
	l := b.claimOne(t, "w", first.ID, time.Minute)
	b.claimNone(t, "w")

	// The key holds for its whole ttl, even after the run finished.
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted})
	after := mk("order-1")
	e3 := b.event("app/order", `{}`)
	skipped("after completion", b.publishOne(t, e3, after).Runs[0], after, e3.ID, first.ID)

	// CreateRuns applies it too.
	again := mk("order-1")
	refs, err := b.store.CreateRuns(b.ctx, e2.ID, []store.RunSpec{again})
	if err != nil {
		t.Fatalf("CreateRuns: %v", err)
	}
	checkRef(t, "CreateRuns", refs[0], store.RunRef{ID: again.ID, FunctionID: "fn-a", Status: store.StatusSkipped, Skip: store.SkipIdempotency})
	checkEqual(t, "CreateRuns: Error", b.getRun(t, again.ID).Error, `idempotency key "order-1" already used by run `+first.ID)

	// Other keys are independent; a key repeated within one publication
	// creates one run and one Skipped run.
	other := mk("order-2")
	a, a2 := mk("order-3"), mk("order-3")
	e4 := b.event("app/order", `{}`)
	p = b.publishOne(t, e4, other, a, a2)
	checkRef(t, "other key", p.Runs[0], store.RunRef{ID: other.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	checkRef(t, "batch first", p.Runs[1], store.RunRef{ID: a.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	checkRef(t, "batch repeat", p.Runs[2], store.RunRef{ID: a2.ID, FunctionID: "fn-a", Status: store.StatusSkipped, Skip: store.SkipIdempotency})
	checkEqual(t, "batch repeat: Error", b.getRun(t, a2.ID).Error, `idempotency key "order-3" already used by run `+a.ID)

	// Once IdempotencyTTL has passed since the first run, the key is free:
	// the Skipped runs did not renew it.
	b.clock.Advance(ttl - 10*time.Minute + time.Second)
	fresh := mk("order-1")
	p = b.publishOne(t, b.event("app/order", `{}`), fresh)
	checkRef(t, "after ttl", p.Runs[0], store.RunRef{ID: fresh.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	checkEqual(t, "fresh run status", b.getRun(t, fresh.ID).Status, store.StatusQueued)
}

// testSkippedRunHoldsNoKey: a run stored Skipped by the rate limit or a
// singleton does not take the idempotency key, so the next event with
// that key, once the limit allows it, runs.
func testSkippedRunHoldsNoKey(t *testing.T, b *bundle) {
	mk := func() store.RunSpec {
		s := b.spec("fn-a")
		s.IdempotencyKey, s.IdempotencyTTL = "order-1", time.Hour
		s.RateLimitKey, s.RateLimit, s.RateLimitPeriod = "fn-a", 1, time.Minute
		return s
	}
	filler := b.spec("fn-a")
	filler.RateLimitKey, filler.RateLimit, filler.RateLimitPeriod = "fn-a", 1, time.Minute
	checkEqual(t, "filler", b.enqueue(t, filler)[0].Status, store.StatusQueued)

	limited := mk()
	checkRef(t, "rate limited", b.enqueue(t, limited)[0], store.RunRef{ID: limited.ID, FunctionID: "fn-a", Status: store.StatusSkipped, Skip: store.SkipRateLimit})
	checkEqual(t, "rate limited: Error", b.getRun(t, limited.ID).Error, "rate limit exceeded")

	b.clock.Advance(time.Minute)
	next := mk()
	checkRef(t, "next", b.enqueue(t, next)[0], store.RunRef{ID: next.ID, FunctionID: "fn-a", Status: store.StatusQueued})
}

func testRateLimit(t *testing.T, b *bundle) {
	mk := func(key string) store.RunSpec {
		s := b.spec("fn-a")
		s.RateLimitKey = key
		s.RateLimit = 2
		s.RateLimitPeriod = time.Minute
		return s
	}
	statuses := func(refs []store.RunRef) []store.Status {
		var st []store.Status
		for _, r := range refs {
			if r.Existing {
				t.Errorf("rate-limited ref %s has Existing set", r.ID)
			}
			want := store.SkipReason("")
			if r.Status == store.StatusSkipped {
				want = store.SkipRateLimit
			}
			checkEqual(t, "ref "+r.ID+" Skip", r.Skip, want)
			st = append(st, r.Status)
		}
		return st
	}
	Q, S := store.StatusQueued, store.StatusSkipped
	var queued []string
	check := func(what string, specs []store.RunSpec, want ...store.Status) {
		t.Helper()
		refs := b.enqueue(t, specs...)
		checkIDs(t, what+" ids", refIDs(refs), specIDs(specs))
		if got := statuses(refs); !slices.Equal(got, want) {
			t.Errorf("%s: statuses = %v, want %v", what, got, want)
		}
		for i, r := range refs {
			run := b.getRun(t, r.ID)
			checkEqual(t, what+" stored status", run.Status, want[i])
			if want[i] == S {
				checkTime(t, what+" EndedAt of skipped", run.EndedAt, b.now())
				checkTime(t, what+" AvailableAt of skipped", run.AvailableAt, time.Time{})
			} else {
				queued = append(queued, r.ID)
			}
		}
	}

	check("burst", []store.RunSpec{mk("k"), mk("k"), mk("k"), mk("other")}, Q, Q, S, Q)
	check("next publication", []store.RunSpec{mk("k")}, S)
	// RateLimit is GCRA: half a period frees half the burst.
	b.clock.Advance(30 * time.Second)
	check("half a period later", []store.RunSpec{mk("k"), mk("k")}, Q, S)
	b.clock.Advance(time.Minute)
	check("a period later", []store.RunSpec{mk("k"), mk("k"), mk("k")}, Q, Q, S)
	check("other key", []store.RunSpec{mk("other")}, Q)

	// Skipped runs are finished: never claimable.
	got := leaseIDs(b.claim(t, "w", 100, time.Minute))
	slices.Sort(got)
	slices.Sort(queued)
	checkIDs(t, "claimable runs", got, queued)
}

func testSingleton(t *testing.T, b *bundle) {
	mk := func(key string) store.RunSpec {
		s := b.spec("fn-a")
		s.SingletonKey = key
		return s
	}
	first := b.enqueue(t, mk("s"))[0]
	checkEqual(t, "first status", first.Status, store.StatusQueued)

	holder := first.ID
	skipped := func(what string) {
		t.Helper()
		s := mk("s")
		ref := b.enqueue(t, s)[0]
		checkRef(t, what, ref, store.RunRef{ID: s.ID, FunctionID: "fn-a", Status: store.StatusSkipped, Skip: store.SkipSingleton})
		r := b.getRun(t, s.ID)
		checkEqual(t, what+": stored status", r.Status, store.StatusSkipped)
		checkEqual(t, what+": Error", r.Error, "singleton: run "+holder+" is unfinished")
		checkTime(t, what+": EndedAt", r.EndedAt, b.now())
	}
	skipped("while queued")
	l := b.claimOne(t, "w", first.ID, time.Minute)
	skipped("while running")
	if err := b.store.Suspend(b.ctx, l, store.Suspension{Status: store.StatusSleeping, AvailableAt: b.now().Add(time.Minute)}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	skipped("while sleeping")
	b.clock.Advance(time.Minute)
	b.complete(t, first.ID)

	next := mk("s")
	checkRef(t, "after the first finished", b.enqueue(t, next)[0], store.RunRef{ID: next.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	holder = next.ID
	other := mk("t")
	checkRef(t, "other key", b.enqueue(t, other)[0], store.RunRef{ID: other.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	skipped("while the next is queued")
}

func testDebounce(t *testing.T, b *bundle) {
	const period, maxWait = 10 * time.Second, 25 * time.Second
	mk := func(key string) store.RunSpec {
		s := b.spec("fn-a")
		s.DebounceKey = key
		s.DebouncePeriod = period
		s.DebounceMaxWait = maxWait
		return s
	}
	t0 := b.now()
	first := mk("d")
	e1 := b.event("app/typed", `{"n":1}`)
	ref := b.publishOne(t, e1, first).Runs[0]
	checkRef(t, "first", ref, store.RunRef{ID: first.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	// Decision: the store debounces the first event too: its run starts
	// DebouncePeriod after it, as Inngest's debounce does.
	checkTime(t, "first AvailableAt", b.getRun(t, first.ID).AvailableAt, t0.Add(period))

	evs := []string{e1.ID}
	steps := []struct {
		advance time.Duration
		want    time.Duration // AvailableAt after the event, from t0
	}{
		{4 * time.Second, 14 * time.Second},
		{4 * time.Second, 18 * time.Second},
		{8 * time.Second, maxWait}, // 26 s capped at created + MaxWait
		{8 * time.Second, maxWait},
	}
	for i, st := range steps {
		b.clock.Advance(st.advance)
		b.claimNone(t, "w")
		s := mk("d")
		ev := b.event("app/typed", `{}`)
		evs = append(evs, ev.ID)
		ref := b.publishOne(t, ev, s).Runs[0]
		checkRef(t, "debounced ref", ref, store.RunRef{ID: first.ID, FunctionID: "fn-a", Status: store.StatusQueued, Existing: true, Skip: store.SkipDebounce})
		checkIDs(t, "the folded event's runs", runIDs(b.allRuns(t, store.RunFilter{EventID: ev.ID})), []string{first.ID})
		_, err := b.store.GetRun(b.ctx, s.ID)
		wantErr(t, "GetRun(debounced spec)", err, store.ErrNotFound)
		r := b.getRun(t, first.ID)
		checkEqual(t, "EventID", r.EventID, ev.ID)
		checkIDs(t, "EventIDs", r.EventIDs, evs)
		checkEqual(t, "Status", r.Status, store.StatusQueued)
		checkTime(t, "CreatedAt", r.CreatedAt, t0)
		checkTime(t, fmt.Sprintf("AvailableAt after event %d", i+2), r.AvailableAt, t0.Add(st.want))
	}
	if len(b.allRuns(t, store.RunFilter{})) != 1 {
		t.Fatalf("debounced events created more than one run")
	}

	// Other keys are independent.
	other := mk("other")
	checkRef(t, "other key", b.enqueue(t, other)[0], store.RunRef{ID: other.ID, FunctionID: "fn-a", Status: store.StatusQueued})

	b.clock.Advance(time.Second) // t0 + 25 s
	l := b.claimOne(t, "w", first.ID, time.Minute)
	checkEqual(t, "claimed run's EventID", l.Run.EventID, evs[len(evs)-1])

	// Once claimed, the run no longer absorbs events: a new one starts.
	next := mk("d")
	ref = b.publishOne(t, b.event("app/typed", `{}`), next).Runs[0]
	checkRef(t, "after claim", ref, store.RunRef{ID: next.ID, FunctionID: "fn-a", Status: store.StatusQueued})
	checkTime(t, "new run AvailableAt", b.getRun(t, next.ID).AvailableAt, b.now().Add(period))
}

func testDebounceWithoutMaxWait(t *testing.T, b *bundle) {
	s := b.spec("fn-a")
	s.DebounceKey = "d"
	s.DebouncePeriod = 10 * time.Second
	b.enqueue(t, s)
	for range 6 {
		b.clock.Advance(8 * time.Second)
		n := b.spec("fn-a")
		n.DebounceKey = "d"
		n.DebouncePeriod = 10 * time.Second
		ref := b.enqueue(t, n)[0]
		checkEqual(t, "debounced into", ref.ID, s.ID)
		checkTime(t, "AvailableAt", b.getRun(t, s.ID).AvailableAt, b.now().Add(10*time.Second))
	}
}

func specIDs(specs []store.RunSpec) []string {
	ids := make([]string, len(specs))
	for i, s := range specs {
		ids[i] = s.ID
	}
	return ids
}
