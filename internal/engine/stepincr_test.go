package engine_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// TestStepIncrCountsOnceWithTheExactValue: runs counting one key at once
// each get the exact value their addition left (1 to n, each once), in
// one store write with the deferred step before it; a run whose finish
// was lost after its count gets the recorded value back on its next
// lease and does not add again; a key that holds a set fails the step at
// once and changes nothing.
func TestStepIncrCountsOnceWithTheExactValue(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		cl := &commitLog{lost: make(chan struct{})}
		var executions atomic.Int32
		b := setup(t, be, options{leaseTTL: time.Minute, wrap: func(st store.Store) store.Store { cl.Store = st; return cl }},
			engine.Function{
				ID: "view", Triggers: []engine.Trigger{{Event: "test/view"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					if _, err := engine.StepStore(ctx, r, "seen", func(ctx context.Context, tx *store.Tx) (bool, error) {
						return true, tx.SetAddBlind(ctx, "seen", 0, r.ID)
					}); err != nil {
						return nil, err
					}
					return engine.StepIncr(ctx, r, "add", "views", 1, 0)
				},
			},
			engine.Function{
				ID: "crash", Triggers: []engine.Trigger{{Event: "test/crash"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					executions.Add(1)
					return engine.StepIncr(ctx, r, "add", "crash:views", 1, 0)
				},
			},
			engine.Function{
				ID: "wrong", Triggers: []engine.Trigger{{Event: "test/wrong"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					return engine.StepIncr(ctx, r, "add", "aset", 1, 0)
				},
			})

		const views = 20
		ids := make([]string, views)
		for i := range ids {
			ids[i] = oneRun(t, b.send(t, "test/view", `{}`))
		}
		var got []int
		for _, id := range ids {
			n, err := strconv.Atoi(string(b.waitStatus(t, id, store.StatusCompleted).Output))
			if err != nil {
				t.Fatalf("output of run %s: %v", id, err)
			}
			got = append(got, n)
		}
		slices.Sort(got)
		for i, n := range got {
			if n != i+1 {
				t.Fatalf("the runs' counts = %v, want 1 to %d, each once", got, views)
			}
		}
		if v, err := b.st.Get(b.ctx, "views"); err != nil || v != strconv.Itoa(views) {
			t.Errorf("views = %q, %v; want %d", v, err, views)
		}
		if n, err := b.st.SetCard(b.ctx, "seen"); err != nil || n != views {
			t.Errorf("SetCard(seen) = %d, %v; want %d", n, err, views)
		}
		calls := cl.taken()
		if n := countOf(calls, "CommitStepsCount seen add"); n != views {
			t.Errorf("%d counted commits carrying the deferred step, want %d: %q", n, views, calls)
		}
		if n := countOf(calls, "Finish"); n != views {
			t.Errorf("%d finishes, want %d: %q", n, views, calls)
		}

		// The finish after the count is lost, as when the daemon dies.
		cl.failFinish.Store(true)
		id := oneRun(t, b.send(t, "test/crash", `{}`))
		select {
		case <-cl.lost:
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the finish")
		}
		b.clock.Advance(2 * time.Minute) // the lease lapses; the pool claims the run again
		if out := string(b.waitStatus(t, id, store.StatusCompleted).Output); out != "1" {
			t.Errorf("output after the lost finish = %s, want 1", out)
		}
		if v, err := b.st.Get(b.ctx, "crash:views"); err != nil || v != "1" {
			t.Errorf("crash:views = %q, %v; want 1: the count was applied again", v, err)
		}
		if n := executions.Load(); n != 2 {
			t.Errorf("the handler ran %d times, want 2 (once per lease)", n)
		}

		if _, err := b.st.SetAdd(b.ctx, "aset", 0, "m"); err != nil {
			t.Fatal(err)
		}
		id = oneRun(t, b.send(t, "test/wrong", `{}`))
		run := b.waitStatus(t, id, store.StatusFailed)
		st := steps(t, b, id)["add"]
		if st.Status != store.StatusFailed || len(st.Attempts) != 1 || !strings.Contains(st.Error, "aset") {
			t.Errorf("step add = %+v, want failed after one attempt, naming the key", st)
		}
		if run.Attempt != 0 {
			t.Errorf("run attempt = %d, want 0: a count of a set is not retried", run.Attempt)
		}
		if m, err := b.st.SetMembers(b.ctx, "aset"); err != nil || len(m) != 1 {
			t.Errorf("aset = %v, %v; want [m]", m, err)
		}
	})
}

// countOf counts the calls equal to call.
func countOf(calls []string, call string) int {
	n := 0
	for _, c := range calls {
		if c == call {
			n++
		}
	}
	return n
}

// TestStepIncrAfterAConflictingDeferredStep: the deferred step committed
// with the count read a key that another writer changed before the
// commit. Nothing of the batch applies (the count neither), the handler
// executes again at once, and the count is applied once, with the value
// the second commit left.
func TestStepIncrAfterAConflictingDeferredStep(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		obs := &conflicts{}
		var executions atomic.Int32
		var b *bundle
		b = setup(t, be, options{observer: obs},
			engine.Function{
				ID: "quote-and-count", Triggers: []engine.Trigger{{Event: "test/quote"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					price, err := quotePrice(ctx, r, "quote", "quoted")
					if err != nil {
						return nil, err
					}
					if executions.Add(1) == 1 {
						// Another writer changes the price before the commit.
						if _, err := b.st.IncrBy(ctx, "price", 10, 0); err != nil {
							return nil, err
						}
					}
					n, err := engine.StepIncr(ctx, r, "count", "quotes", 1, 0)
					if err != nil {
						return nil, err
					}
					return price + "#" + strconv.FormatInt(n, 10), nil
				},
			})
		if err := b.st.Set(b.ctx, "price", "100", 0); err != nil {
			t.Fatal(err)
		}
		id := oneRun(t, b.send(t, "test/quote", `{}`))
		if out := string(b.waitStatus(t, id, store.StatusCompleted).Output); out != `"110#1"` {
			t.Errorf("output = %s, want \"110#1\": the second execution's quote and a single count", out)
		}
		for key, want := range map[string]string{"quotes": "1", "quoted": "110"} {
			if v, err := b.st.Get(b.ctx, key); err != nil || v != want {
				t.Errorf("%s = %q, %v; want %s", key, v, err, want)
			}
		}
		if n := executions.Load(); n != 2 {
			t.Errorf("the handler executed %d times, want 2", n)
		}
		if n := obs.n.Load(); n != 1 {
			t.Errorf("%d step conflicts counted, want 1", n)
		}
	})
}
