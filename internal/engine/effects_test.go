package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// conflicts is an Observer that counts StepTx conflicts.
type conflicts struct{ n atomic.Int32 }

func (*conflicts) RunStarted(string, time.Duration)          {}
func (*conflicts) RunSkipped(string, string)                 {}
func (*conflicts) RunFinished(string, string)                {}
func (*conflicts) StepAttempt(string, string, time.Duration) {}
func (*conflicts) LeaseLost()                                {}
func (*conflicts) LeaseTakenOver()                           {}
func (o *conflicts) StepConflict(string)                     { o.n.Add(1) }
func (*conflicts) StoreError(string)                         {}

// TestStepTxConflictRunsTheBodyAgain: two runs read one counter before
// either commits. The second commit conflicts, its body runs again on
// the new value, and the counter ends at the exact sum; each run's
// recorded output is the value its own increment led to.
func TestStepTxConflictRunsTheBodyAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		obs := &conflicts{}
		var (
			mu     sync.Mutex
			bodies = map[string]int{}
			reads  atomic.Int32
			both   = make(chan struct{})
		)
		b := setup(t, be, options{observer: obs}, engine.Function{
			ID: "count", Triggers: []engine.Trigger{{Event: "test/count"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.StepTx(ctx, r, "increment", func(ctx context.Context, kv *store.Tx) (int64, error) {
					n, err := kv.IncrBy(ctx, "counter", 1, 0)
					if err != nil {
						return 0, err
					}
					mu.Lock()
					bodies[r.ID]++
					first := bodies[r.ID] == 1
					mu.Unlock()
					if first {
						if reads.Add(1) == 2 {
							close(both)
						}
						select {
						case <-both:
						case <-ctx.Done():
							return 0, ctx.Err()
						}
					}
					return n, nil
				})
			},
		})
		ids := []string{oneRun(t, b.send(t, "test/count", `{}`)), oneRun(t, b.send(t, "test/count", `{}`))}
		outputs := map[string]bool{}
		for _, id := range ids {
			outputs[string(b.waitStatus(t, id, store.StatusCompleted).Output)] = true
		}
		if v, err := b.st.Get(b.ctx, "counter"); err != nil || v != "2" {
			t.Errorf("counter = %q, %v; want 2", v, err)
		}
		if !outputs["1"] || !outputs["2"] {
			t.Errorf("run outputs = %v, want 1 and 2", outputs)
		}
		if n := obs.n.Load(); n != 1 {
			t.Errorf("conflicts observed = %d, want 1", n)
		}
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, n := range bodies {
			total += n
		}
		if total != 3 {
			t.Errorf("bodies ran %d times (%v), want 3: one each and one after the conflict", total, bodies)
		}
		for _, id := range ids {
			if s := steps(t, b, id)["increment"]; len(s.Attempts) != 1 {
				t.Errorf("run %s: increment has %d attempts, want 1 (a conflict is no retry)", id, len(s.Attempts))
			}
		}
	})
}

// TestStepTxHotKeyEndsAtTheExactSum: many runs increment one key at once;
// every one commits and the key ends at their number.
func TestStepTxHotKeyEndsAtTheExactSum(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{}, engine.Function{
			ID: "count", Triggers: []engine.Trigger{{Event: "test/count"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.StepTx(ctx, r, "increment", func(ctx context.Context, kv *store.Tx) (int64, error) {
					if _, err := kv.SetAdd(ctx, "runs", 0, r.ID); err != nil {
						return 0, err
					}
					return kv.IncrBy(ctx, "counter", 1, 0)
				})
			},
		})
		const runs = 40
		var ids []string
		for range runs {
			ids = append(ids, oneRun(t, b.send(t, "test/count", `{}`)))
		}
		for _, id := range ids {
			b.waitStatus(t, id, store.StatusCompleted)
		}
		if v, err := b.st.Get(b.ctx, "counter"); err != nil || v != strconv.Itoa(runs) {
			t.Errorf("counter = %q, %v; want %d", v, err, runs)
		}
		if n, err := b.st.SetCard(b.ctx, "runs"); err != nil || n != runs {
			t.Errorf("runs set = %d, %v; want %d", n, err, runs)
		}
	})
}

// TestStepTxBodyErrorAppliesNothing: a body that fails leaves no trace of
// its writes; a retried body that then succeeds applies its writes once.
func TestStepTxBodyErrorAppliesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var tries atomic.Int32
		b := setup(t, be, options{}, engine.Function{
			ID: "fails", Triggers: []engine.Trigger{{Event: "test/fails"}}, Retries: retries(0),
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.StepTx(ctx, r, "write", func(ctx context.Context, kv *store.Tx) (int64, error) {
					if _, err := kv.IncrBy(ctx, "failed", 1, 0); err != nil {
						return 0, err
					}
					return 0, engine.NonRetriable(errors.New("refused"))
				})
			},
		}, engine.Function{
			ID: "flaky", Triggers: []engine.Trigger{{Event: "test/flaky"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.StepTx(ctx, r, "write", func(ctx context.Context, kv *store.Tx) (int64, error) {
					n, err := kv.IncrBy(ctx, "flaky", 1, 0)
					if err != nil {
						return 0, err
					}
					if tries.Add(1) == 1 {
						return 0, fmt.Errorf("boom after writing %d", n)
					}
					return n, nil
				})
			},
		})
		failed := oneRun(t, b.send(t, "test/fails", `{}`))
		b.waitStatus(t, failed, store.StatusFailed)
		_, err := b.st.Get(b.ctx, "failed")
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(failed) after a failed body = %v, want not found", err)
		}

		flaky := oneRun(t, b.send(t, "test/flaky", `{}`))
		b.waitFor(t, "the first attempt to be recorded", func() bool {
			return len(steps(t, b, flaky)["write"].Attempts) == 1
		})
		if _, err := b.st.Get(b.ctx, "flaky"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(flaky) after a failed attempt = %v, want not found", err)
		}
		b.clock.Advance(15 * time.Second)
		run := b.waitStatus(t, flaky, store.StatusCompleted)
		if string(run.Output) != "1" {
			t.Errorf("output = %s, want 1", run.Output)
		}
		if v, err := b.st.Get(b.ctx, "flaky"); err != nil || v != "1" {
			t.Errorf("flaky = %q, %v; want 1", v, err)
		}
	})
}

// TestStepTxReplayAppliesNothing: a run that resumes after a sleep replays
// its completed StepTx from the record, without running the body or
// writing again.
func TestStepTxReplayAppliesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var bodies atomic.Int32
		b := setup(t, be, options{}, engine.Function{
			ID: "count-then-sleep", Triggers: []engine.Trigger{{Event: "test/count"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				n, err := engine.StepTx(ctx, r, "increment", func(ctx context.Context, kv *store.Tx) (int64, error) {
					bodies.Add(1)
					return kv.IncrBy(ctx, "counter", 1, 0)
				})
				if err != nil {
					return nil, err
				}
				if err := r.Sleep(ctx, "nap", time.Minute); err != nil {
					return nil, err
				}
				return n, nil
			},
		})
		id := oneRun(t, b.send(t, "test/count", `{}`))
		b.waitStatus(t, id, store.StatusSleeping)
		b.clock.Advance(time.Minute)
		run := b.waitStatus(t, id, store.StatusCompleted)
		if string(run.Output) != "1" {
			t.Errorf("output = %s, want 1", run.Output)
		}
		if v, err := b.st.Get(b.ctx, "counter"); err != nil || v != "1" {
			t.Errorf("counter = %q, %v; want 1", v, err)
		}
		if n := bodies.Load(); n != 1 {
			t.Errorf("the body ran %d times, want 1", n)
		}
	})
}
