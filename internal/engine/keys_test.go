package engine_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// noValue are the data of events without a value at data.k: absent, null
// and the empty string (docs/engine.md, "Flow control").
var noValue = []string{`{}`, `{"k":null}`, `{"k":""}`}

// TestKeyWithoutValue drives each kind of key with events that have no
// value at its path: the folding keys (idempotency, debounce) never merge
// them, the limiting keys (rate limit, singleton, concurrency) put them in
// the function-wide bucket.
func TestKeyWithoutValue(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		obs := &skips{}
		noop := func(context.Context, *engine.Run) (any, error) { return nil, nil }
		b := setup(t, be, options{noPool: true, observer: obs},
			engine.Function{ID: "idem", Triggers: []engine.Trigger{{Event: "test/idem"}}, Idempotency: "event.data.k", Handler: noop},
			engine.Function{ID: "by-id", Triggers: []engine.Trigger{{Event: "test/by-id"}}, Idempotency: "event.id", Handler: noop},
			engine.Function{ID: "deb", Triggers: []engine.Trigger{{Event: "test/deb"}}, Handler: noop,
				Debounce: &engine.Debounce{Key: "event.data.k", Period: 10 * time.Second}},
			engine.Function{ID: "rl", Triggers: []engine.Trigger{{Event: "test/rl"}}, Handler: noop,
				RateLimit: &engine.RateLimit{Key: "event.data.k", Limit: 1, Period: time.Minute}},
			engine.Function{ID: "single", Triggers: []engine.Trigger{{Event: "test/single"}}, Handler: noop,
				Singleton: &engine.Singleton{Key: "event.data.k"}},
			engine.Function{ID: "conc", Triggers: []engine.Trigger{{Event: "test/conc"}}, Handler: noop,
				Concurrency: &engine.Concurrency{Key: "event.data.k", Limit: 1}},
		)
		statuses := func(name string, data ...string) []store.RunRef {
			t.Helper()
			var refs []store.RunRef
			for _, d := range data {
				refs = append(refs, b.send(t, name, d).Runs[0])
			}
			return refs
		}
		ownRuns := func(what string, refs []store.RunRef) {
			t.Helper()
			seen := map[string]bool{}
			for _, r := range refs {
				if r.Status != store.StatusQueued || r.Existing || r.Skip != "" || seen[r.ID] {
					t.Errorf("%s: ref %+v, want a Queued run of its own", what, r)
				}
				seen[r.ID] = true
			}
		}

		// Idempotency: no value, no key; the same value, one run.
		ownRuns("idempotency without a value", statuses("test/idem", noValue...))
		same := statuses("test/idem", `{"k":"o-1"}`, `{"k":"o-1"}`)
		ownRuns("idempotency, first of a value", same[:1])
		if r := same[1]; r.Status != store.StatusSkipped || r.Skip != store.SkipIdempotency {
			t.Errorf("idempotency, repeat of a value: %+v, want Skipped", r)
		} else if got, want := b.run(t, r.ID).Error, `idempotency key "fn:idem:o-1" already used by run `+same[0].ID; got != want {
			t.Errorf("idempotency, repeat: error %q, want %q", got, want)
		}
		// event.id of events sent without an id is their own id.
		ownRuns("idempotency on event.id without ids", statuses("test/by-id", `{}`, `{}`, `{}`))

		// Debounce: an event without a value is its own key, delayed by
		// the period like any debounced run; a value folds.
		noKey := statuses("test/deb", noValue...)
		ownRuns("debounce without a value", noKey)
		for _, r := range noKey {
			if run := b.run(t, r.ID); !run.AvailableAt.Equal(start.Add(10 * time.Second)) {
				t.Errorf("debounce without a value: run starts at %v, want after the period", run.AvailableAt)
			}
		}
		folded := statuses("test/deb", `{"k":"u"}`, `{"k":"u"}`)
		if r := folded[1]; r.ID != folded[0].ID || !r.Existing || r.Skip != store.SkipDebounce {
			t.Errorf("debounce, same value: %+v, want folded into %s", r, folded[0].ID)
		}

		// Rate limit 1 per minute: no value shares one bucket.
		rl := statuses("test/rl", append(noValue, `{"k":"a"}`)...)
		wantStatus(t, "rate limit", rl, store.StatusQueued, store.StatusSkipped, store.StatusSkipped, store.StatusQueued)

		// Singleton: no value shares one bucket.
		single := statuses("test/single", append(noValue, `{"k":"a"}`)...)
		wantStatus(t, "singleton", single, store.StatusQueued, store.StatusSkipped, store.StatusSkipped, store.StatusQueued)

		// Concurrency: no value shares the function's slot.
		var keys []string
		for _, r := range statuses("test/conc", append(noValue, `{"k":"a"}`)...) {
			keys = append(keys, b.run(t, r.ID).ConcurrencyKey)
		}
		if want := []string{"conc", "conc", "conc", "conc:a"}; !slices.Equal(keys, want) {
			t.Errorf("concurrency keys %q, want %q", keys, want)
		}

		// Every skip was observed once, with its reason.
		want := []string{"deb/debounce", "idem/idempotency", "rl/rate_limit", "rl/rate_limit", "single/singleton", "single/singleton"}
		if got := obs.sorted(); !slices.Equal(got, want) {
			t.Errorf("observed skips %q, want %q", got, want)
		}
	})
}

// TestWaitForEventWithoutValue: a run whose trigger event has no value at
// the match path fails its wait at once instead of matching every other
// event without one.
func TestWaitForEventWithoutValue(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{}, engine.Function{
			ID: "approval", Triggers: []engine.Trigger{{Event: "test/order.created"}}, Retries: retries(0),
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				_, err := r.WaitForEvent(ctx, "wait-approval", engine.WaitOptions{Event: "test/order.approved", Match: "data.order", Timeout: time.Hour})
				return nil, err
			},
		})
		for _, data := range []string{`{}`, `{"order":null}`, `{"order":""}`} {
			id := oneRun(t, b.send(t, "test/order.created", data))
			r := b.waitStatus(t, id, store.StatusFailed)
			if !strings.Contains(r.Error, "has no data.order to match") {
				t.Errorf("%s: error %q, want the missing value named", data, r.Error)
			}
		}
	})
}

func wantStatus(t *testing.T, what string, refs []store.RunRef, want ...store.Status) {
	t.Helper()
	var got []store.Status
	for _, r := range refs {
		got = append(got, r.Status)
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: statuses %v, want %v", what, got, want)
	}
}

// skips is an Observer that records each skip as "function/reason".
type skips struct {
	mu  sync.Mutex
	got []string
}

func (o *skips) RunSkipped(function, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, function+"/"+reason)
}

func (o *skips) sorted() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(slices.Values(o.got))
}

func (*skips) RunStarted(string, time.Duration)          {}
func (*skips) RunFinished(string, string)                {}
func (*skips) StepAttempt(string, string, time.Duration) {}
func (*skips) LeaseLost()                                {}
func (*skips) LeaseTakenOver()                           {}
func (*skips) StepConflict(string)                       {}
func (*skips) StoreError(string)                         {}
