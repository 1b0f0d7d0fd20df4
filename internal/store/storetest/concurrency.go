package storetest

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var concurrencyCases = []testCase{
	{"ClaimsExactlyOnce", testConcurrentClaims},
	{"ClientIDExactlyOnce", pinned(testConcurrentClientID)},
	{"IdempotencyExactlyOnce", pinned(testConcurrentIdempotency)},
	{"SetNXExactlyOnce", testConcurrentSetNX},
	{"PublishesWithOneDuplicate", pinned(testConcurrentPublishes)},
	{"FinishesWithOneLostLease", testConcurrentFinishes},
}

func testConcurrentClaims(t *testing.T, b *bundle) {
	const runs, workers = 200, 20
	specs := make([]store.RunSpec, runs)
	for i := range specs {
		specs[i] = b.spec("fn-a")
	}
	b.enqueue(t, specs...)

	var (
		mu      sync.Mutex
		claimed = map[string]int{}
		wg      sync.WaitGroup
	)
	for w := range workers {
		owner := fmt.Sprintf("worker-%d", w)
		wg.Go(func() {
			for {
				ls, err := b.store.Claim(b.ctx, owner, 5, time.Hour)
				if err != nil {
					t.Errorf("Claim(%s): %v", owner, err)
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					claimed[l.RunID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, s := range specs {
		if n := claimed[s.ID]; n != 1 {
			t.Errorf("run %s claimed %d times, want once", s.ID, n)
		}
	}
	checkEqual(t, "distinct runs claimed", len(claimed), runs)
}

// concurrently runs fn from n goroutines at once and waits for them.
func concurrently(n int, fn func(i int)) {
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-ready
			fn(i)
		})
	}
	close(ready)
	wg.Wait()
}

func testConcurrentClientID(t *testing.T, b *bundle) {
	const n = 20
	events := make([]store.Event, n)
	for i := range events {
		events[i] = b.event("app/once", `{}`)
		events[i].ClientID = "same-client-id"
	}
	results := make([]store.Published, n)
	concurrently(n, func(i int) {
		got, err := b.store.Publish(b.ctx, []store.Publication{{Event: events[i], ClientIDTTL: time.Hour, Runs: []store.RunSpec{b.spec("fn-a")}}})
		if err != nil {
			t.Errorf("Publish: %v", err)
			return
		}
		results[i] = got[0]
	})
	accepted := ""
	for i, r := range results {
		if !r.Duplicate {
			if accepted != "" {
				t.Errorf("client id accepted twice: %s and %s", accepted, r.EventID)
			}
			accepted = r.EventID
			checkEqual(t, "accepted EventID", r.EventID, events[i].ID)
		}
	}
	if accepted == "" {
		t.Fatalf("no publication accepted")
	}
	for _, r := range results {
		checkEqual(t, "EventID", r.EventID, accepted)
	}
	checkEqual(t, "runs created", len(b.allRuns(t, store.RunFilter{})), 1)
}

func testConcurrentIdempotency(t *testing.T, b *bundle) {
	const n = 20
	refs := make([]store.RunRef, n)
	concurrently(n, func(i int) {
		s := b.spec("fn-a")
		s.IdempotencyKey = "charge-1"
		s.IdempotencyTTL = time.Hour
		got, err := b.store.Publish(b.ctx, []store.Publication{{Event: b.event("app/charge", `{}`), Runs: []store.RunSpec{s}}})
		if err != nil {
			t.Errorf("Publish: %v", err)
			return
		}
		refs[i] = got[0].Runs[0]
	})
	var queued []string
	for _, r := range refs {
		switch r.Status {
		case store.StatusQueued:
			queued = append(queued, r.ID)
		case store.StatusSkipped:
			checkEqual(t, "skipped ref Skip", r.Skip, store.SkipIdempotency)
		default:
			t.Errorf("ref %s is %s, want Queued or Skipped", r.ID, r.Status)
		}
	}
	checkEqual(t, "runs queued", len(queued), 1)
	checkEqual(t, "runs stored", len(b.allRuns(t, store.RunFilter{})), n)
	checkEqual(t, "Skipped runs stored", len(b.allRuns(t, store.RunFilter{Statuses: []store.Status{store.StatusSkipped}})), n-1)
}

func testConcurrentSetNX(t *testing.T, b *bundle) {
	const n = 20
	won := make([]bool, n)
	concurrently(n, func(i int) {
		ok, err := b.store.SetNX(b.ctx, "lock", fmt.Sprint(i), time.Minute)
		if err != nil {
			t.Errorf("SetNX: %v", err)
		}
		won[i] = ok
	})
	winners := 0
	for i, ok := range won {
		if ok {
			winners++
			checkEqual(t, "value", b.kvGet(t, "lock"), fmt.Sprint(i))
		}
	}
	checkEqual(t, "SetNX winners", winners, 1)
}

// testConcurrentPublishes: concurrent calls, which a backend may commit
// together, each get their own answer; one of them repeats another's client
// id and is the only duplicate.
func testConcurrentPublishes(t *testing.T, b *bundle) {
	const n = 16
	pubs := make([]store.Publication, n)
	for i := range pubs {
		ev := b.event("app/batched", fmt.Sprintf(`{"i":%d}`, i))
		ev.ClientID = fmt.Sprintf("client-%d", i)
		pubs[i] = store.Publication{Event: ev, ClientIDTTL: time.Hour, Runs: []store.RunSpec{b.spec("fn-a")}}
	}
	pubs[n-1].Event.ClientID = pubs[0].Event.ClientID
	results := make([]store.Published, n)
	concurrently(n, func(i int) {
		got, err := b.store.Publish(b.ctx, []store.Publication{pubs[i]})
		if err != nil {
			t.Errorf("Publish(%d): %v", i, err)
			return
		}
		if len(got) != 1 {
			t.Errorf("Publish(%d) answered %d results, want 1", i, len(got))
			return
		}
		results[i] = got[0]
	})
	duplicates := 0
	for i, r := range results {
		if r.Duplicate {
			duplicates++
			checkEqual(t, "duplicate's answer is an event of the pair", r.EventID == pubs[0].Event.ID || r.EventID == pubs[n-1].Event.ID, true)
			continue
		}
		checkEqual(t, fmt.Sprintf("EventID of publication %d", i), r.EventID, pubs[i].Event.ID)
		checkIDs(t, fmt.Sprintf("runs of publication %d", i), refIDs(r.Runs), []string{pubs[i].Runs[0].ID})
		checkJSON(t, "stored data", b.getEvent(t, r.EventID).Data, pubs[i].Event.Data)
	}
	checkEqual(t, "duplicates", duplicates, 1)
	checkEqual(t, "runs stored", len(b.allRuns(t, store.RunFilter{})), n-1)
}

// testConcurrentFinishes: concurrent finishes, which a backend may apply
// together, each succeed or fail on their own: the run whose lease was lost
// stays cancelled, the others complete with their output and emit.
func testConcurrentFinishes(t *testing.T, b *bundle) {
	const n = 12
	specs := make([]store.RunSpec, n)
	for i := range specs {
		specs[i] = b.spec("fn-a")
	}
	b.enqueue(t, specs...)
	leases := b.claim(t, "worker", n, time.Hour)
	checkEqual(t, "claimed", len(leases), n)
	lost := leases[n/2].RunID
	if _, err := b.store.CancelRun(b.ctx, lost, "cancelled meanwhile"); err != nil {
		t.Fatalf("CancelRun: %v", err)
	}
	emitted := b.event("app/finished", `{"by":"first"}`)
	errs := make([]error, n)
	concurrently(n, func(i int) {
		o := store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
		if i == 0 {
			o.Emit = []store.Publication{{Event: emitted}}
		}
		errs[i] = b.store.Finish(b.ctx, &leases[i], o)
	})
	for i, l := range leases {
		r := b.getRun(t, l.RunID)
		if l.RunID == lost {
			wantErr(t, "Finish after cancel", errs[i], store.ErrLeaseLost)
			checkEqual(t, "status of the cancelled run", r.Status, store.StatusCancelled)
			continue
		}
		if errs[i] != nil {
			t.Errorf("Finish(%s): %v", l.RunID, errs[i])
			continue
		}
		checkEqual(t, "status", r.Status, store.StatusCompleted)
		checkJSON(t, "output", r.Output, []byte(fmt.Sprintf(`{"i":%d}`, i)))
	}
	checkJSON(t, "emitted event", b.getEvent(t, emitted.ID).Data, emitted.Data)
}
