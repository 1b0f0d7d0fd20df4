package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var concurrencyCases = []testCase{
	{"ClaimsExactlyOnce", testConcurrentClaims},
	{"ClientIDExactlyOnce", testConcurrentClientID},
	{"IdempotencyExactlyOnce", testConcurrentIdempotency},
	{"SetNXExactlyOnce", testConcurrentSetNX},
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
	created := 0
	for _, r := range refs {
		if !r.Existing {
			created++
		}
		checkEqual(t, "run id", r.ID, refs[0].ID)
	}
	checkEqual(t, "runs created", created, 1)
	checkEqual(t, "runs stored", len(b.allRuns(t, store.RunFilter{})), 1)
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
