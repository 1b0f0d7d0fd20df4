package engine_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// commitLog is a store that records the writes a run makes (by method,
// with the steps each commits) and can fail the first finish, as a
// daemon killed before its finish reached the store.
type commitLog struct {
	store.Store
	failFinish atomic.Bool
	lost       chan struct{} // closed once the first finish failed
	mu         sync.Mutex
	calls      []string
}

func (c *commitLog) log(call string, steps []store.StepCommit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sc := range steps {
		call += " " + sc.Step.ID
	}
	c.calls = append(c.calls, call)
}

func (c *commitLog) SaveStep(ctx context.Context, l *store.Lease, s store.Step, emit []store.Publication) error {
	c.log("SaveStep", []store.StepCommit{{Step: s}})
	return c.Store.SaveStep(ctx, l, s, emit)
}

func (c *commitLog) CommitStep(ctx context.Context, l *store.Lease, s store.Step, emit []store.Publication, fx store.Effects) error {
	c.log("CommitStep", []store.StepCommit{{Step: s}})
	return c.Store.CommitStep(ctx, l, s, emit, fx)
}

func (c *commitLog) CommitSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit) error {
	c.log("CommitSteps", steps)
	return c.Store.CommitSteps(ctx, l, steps)
}

func (c *commitLog) CommitStepsCount(ctx context.Context, l *store.Lease, steps []store.StepCommit) (int64, error) {
	c.log("CommitStepsCount", steps)
	return c.Store.CommitStepsCount(ctx, l, steps)
}

func (c *commitLog) Finish(ctx context.Context, l *store.Lease, o store.Outcome) error {
	if c.failFinish.CompareAndSwap(true, false) {
		c.log("Finish (lost)", o.Steps)
		close(c.lost)
		return store.ErrUnavailable
	}
	c.log("Finish", o.Steps)
	return c.Store.Finish(ctx, l, o)
}

func (c *commitLog) Suspend(ctx context.Context, l *store.Lease, s store.Suspension) error {
	c.log("Suspend", nil)
	return c.Store.Suspend(ctx, l, s)
}

func (c *commitLog) taken() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = nil
	return out
}

func sameCalls(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: store writes %q, want %q", what, got, want)
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s: store writes %q, want %q", what, got, want)
			return
		}
	}
}

// TestStepStoreCommitsWithTheFinish: store-only steps commit with the
// run's next write. A run of three StepStore steps makes one write, its
// finish, which records the steps, their writes and the outcome; a step
// reading a key a deferred step wrote commits the deferred steps first
// and reads their writes; a Step (which may act outside the store) does
// too.
func TestStepStoreCommitsWithTheFinish(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		cl := &commitLog{}
		b := setup(t, be, options{wrap: func(st store.Store) store.Store { cl.Store = st; return cl }},
			engine.Function{
				ID: "three", Triggers: []engine.Trigger{{Event: "test/three"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					for _, name := range []string{"a", "b", "c"} {
						if _, err := engine.StepStore(ctx, r, name, func(ctx context.Context, tx *store.Tx) (bool, error) {
							return true, tx.IncrByBlind(ctx, "three:"+name, 1, 0)
						}); err != nil {
							return nil, err
						}
					}
					return "done", nil
				},
			},
			engine.Function{
				ID: "reads", Triggers: []engine.Trigger{{Event: "test/reads"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					if _, err := engine.StepStore(ctx, r, "count", func(ctx context.Context, tx *store.Tx) (bool, error) {
						return true, tx.IncrByBlind(ctx, "reads:n", 5, 0)
					}); err != nil {
						return nil, err
					}
					seen, err := engine.StepStore(ctx, r, "read", func(ctx context.Context, tx *store.Tx) (string, error) {
						return tx.GetUnchecked(ctx, "reads:n")
					})
					if err != nil {
						return nil, err
					}
					if _, err := engine.StepStore(ctx, r, "mark", func(ctx context.Context, tx *store.Tx) (bool, error) {
						return true, tx.Set(ctx, "reads:mark", seen, 0)
					}); err != nil {
						return nil, err
					}
					// A plain step sees the mark: it was committed first.
					return engine.Step(ctx, r, "outside", func(ctx context.Context) (string, error) {
						return cl.Store.Get(ctx, "reads:mark")
					})
				},
			})
		id := oneRun(t, b.send(t, "test/three", `{}`))
		if got := string(b.waitStatus(t, id, store.StatusCompleted).Output); got != `"done"` {
			t.Errorf("output = %s", got)
		}
		sameCalls(t, "three StepStore steps", cl.taken(), "Finish a b c")
		for _, name := range []string{"a", "b", "c"} {
			if v, err := b.st.Get(b.ctx, "three:"+name); err != nil || v != "1" {
				t.Errorf("three:%s = %q, %v; want 1", name, v, err)
			}
		}
		if s := steps(t, b, id); len(s) != 3 || s["c"].Status != store.StatusCompleted {
			t.Errorf("steps = %v, want a, b and c completed", s)
		}

		id = oneRun(t, b.send(t, "test/reads", `{}`))
		if got := string(b.waitStatus(t, id, store.StatusCompleted).Output); got != `"5"` {
			t.Errorf("the plain step read %s, want \"5\": the deferred steps were not committed before it", got)
		}
		sameCalls(t, "a read of a deferred write, then a plain step", cl.taken(),
			"CommitSteps count", "CommitSteps read mark", "SaveStep outside", "Finish")
	})
}

// TestStepStoreLostFinishAppliesNothing: when the finish that carries
// the deferred steps never reaches the store (the daemon died first),
// none of their writes happened; the run's next lease runs them again
// and applies them once.
func TestStepStoreLostFinishAppliesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		cl := &commitLog{lost: make(chan struct{})}
		cl.failFinish.Store(true)
		var bodies atomic.Int32
		b := setup(t, be, options{leaseTTL: time.Minute, wrap: func(st store.Store) store.Store { cl.Store = st; return cl }},
			engine.Function{
				ID: "count", Triggers: []engine.Trigger{{Event: "test/count"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					return engine.StepStore(ctx, r, "increment", func(ctx context.Context, tx *store.Tx) (int64, error) {
						bodies.Add(1)
						return tx.IncrBy(ctx, "counter", 1, 0)
					})
				},
			})
		id := oneRun(t, b.send(t, "test/count", `{}`))
		select {
		case <-cl.lost:
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the finish")
		}
		if _, err := b.st.Get(b.ctx, "counter"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(counter) after the lost finish = %v, want not found", err)
		}
		if s := steps(t, b, id); len(s) != 0 {
			t.Errorf("steps after the lost finish = %v, want none", s)
		}
		b.clock.Advance(2 * time.Minute) // the lease lapses; the pool claims the run again
		run := b.waitStatus(t, id, store.StatusCompleted)
		if string(run.Output) != "1" {
			t.Errorf("output = %s, want 1", run.Output)
		}
		if v, err := b.st.Get(b.ctx, "counter"); err != nil || v != "1" {
			t.Errorf("counter = %q, %v; want 1", v, err)
		}
		if n := bodies.Load(); n != 2 {
			t.Errorf("the body ran %d times, want 2 (once per lease)", n)
		}
	})
}

// TestStepStoreConflictExecutesAgain: a key a deferred step read changes
// before the finish commits it. Nothing of the run is applied, the
// handler executes again at once, and the run ends with the new value,
// its writes applied once. A run whose deferred steps keep conflicting
// ends too, its steps then committed one by one.
func TestStepStoreConflictExecutesAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		obs := &conflicts{}
		var executions, stubborn atomic.Int32
		interfere := func(ctx context.Context, st store.KV, times *atomic.Int32, upTo int32) {
			if times.Add(1) <= upTo {
				if _, err := st.IncrBy(ctx, "price", 10, 0); err != nil {
					t.Error(err)
				}
			}
		}
		var b *bundle
		b = setup(t, be, options{observer: obs},
			engine.Function{
				ID: "once", Triggers: []engine.Trigger{{Event: "test/once"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					price, err := quotePrice(ctx, r, "read-price", "quoted:"+r.ID)
					if err != nil {
						return nil, err
					}
					// Another writer changes the price between this run's
					// read and its finish, the first time only.
					interfere(ctx, b.st, &executions, 1)
					return price, nil
				},
			},
			engine.Function{
				ID: "stubborn", Triggers: []engine.Trigger{{Event: "test/stubborn"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					price, err := engine.StepStore(ctx, r, "read-price", func(ctx context.Context, tx *store.Tx) (string, error) {
						v, err := tx.Get(ctx, "price")
						if err != nil {
							return "", err
						}
						// Every deferred execution meets another writer.
						interfere(ctx, b.st, &stubborn, 4)
						return v, tx.Set(ctx, "quoted:"+r.ID, v, 0)
					})
					return price, err
				},
			})
		if err := b.st.Set(b.ctx, "price", "100", 0); err != nil {
			t.Fatal(err)
		}
		id := oneRun(t, b.send(t, "test/once", `{}`))
		run := b.waitStatus(t, id, store.StatusCompleted)
		if string(run.Output) != `"110"` {
			t.Errorf("output = %s, want \"110\": the run executed again on the new price", run.Output)
		}
		if v, err := b.st.Get(b.ctx, "quoted:"+id); err != nil || v != "110" {
			t.Errorf("quoted = %q, %v; want 110", v, err)
		}
		if n := executions.Load(); n != 2 {
			t.Errorf("the handler executed %d times, want 2", n)
		}
		if n := obs.n.Load(); n != 1 {
			t.Errorf("conflicts observed = %d, want 1", n)
		}
		if s := steps(t, b, id)["read-price"]; len(s.Attempts) != 1 {
			t.Errorf("read-price has %d attempts, want 1 (a conflict is no retry)", len(s.Attempts))
		}

		id = oneRun(t, b.send(t, "test/stubborn", `{}`))
		run = b.waitStatus(t, id, store.StatusCompleted)
		want := strconv.Itoa(110 + 40)
		if v, err := b.st.Get(b.ctx, "price"); err != nil || v != want {
			t.Fatalf("price = %q, %v; want %s", v, err, want)
		}
		if string(run.Output) != `"`+want+`"` {
			t.Errorf("output = %s, want %q", run.Output, want)
		}
		if v, err := b.st.Get(b.ctx, "quoted:"+id); err != nil || v != want {
			t.Errorf("quoted = %q, %v; want %s", v, err, want)
		}
	})
}

// TestStepStoreInvalidWriteFailsItsStep: a deferred step whose blind
// write the store cannot apply (an increment of a set) makes the store
// refuse the whole batch; the run executes again committing step by
// step, so the steps before it are recorded and applied once, and the
// step at fault fails on its own, as a StepTx would.
func TestStepStoreInvalidWriteFailsItsStep(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{}, engine.Function{
			ID: "bad-write", Triggers: []engine.Trigger{{Event: "test/bad"}}, Retries: retries(0),
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				if _, err := engine.StepStore(ctx, r, "count", func(ctx context.Context, tx *store.Tx) (bool, error) {
					return true, tx.IncrByBlind(ctx, "counted", 1, 0)
				}); err != nil {
					return nil, err
				}
				return engine.StepStore(ctx, r, "bad", func(ctx context.Context, tx *store.Tx) (bool, error) {
					return true, tx.IncrByBlind(ctx, "a-set", 1, 0)
				})
			},
		})
		if _, err := b.st.SetAdd(b.ctx, "a-set", 0, "member"); err != nil {
			t.Fatal(err)
		}
		id := oneRun(t, b.send(t, "test/bad", `{}`))
		b.waitStatus(t, id, store.StatusFailed)
		if v, err := b.st.Get(b.ctx, "counted"); err != nil || v != "1" {
			t.Errorf("counted = %q, %v; want 1", v, err)
		}
		s := steps(t, b, id)
		if s["count"].Status != store.StatusCompleted || s["bad"].Status != store.StatusFailed {
			t.Errorf("steps = count %s, bad %s; want Completed and Failed", s["count"].Status, s["bad"].Status)
		}
	})
}

// quotePrice is a StepStore step named name that reads the key price
// (checked at the commit) and writes what it read to quoted.
func quotePrice(ctx context.Context, r *engine.Run, name, quoted string) (string, error) {
	return engine.StepStore(ctx, r, name, func(ctx context.Context, tx *store.Tx) (string, error) {
		v, err := tx.Get(ctx, "price")
		if err != nil {
			return "", err
		}
		return v, tx.Set(ctx, quoted, v, 0)
	})
}
