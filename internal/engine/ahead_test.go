package engine_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// lateCommit is a store whose first step commit with effects (CommitStep
// or CommitStepsCount) is made under a lease the run no longer holds, as a
// worker's whose lease lapsed while the commit was under way: a
// partitioned store on a Cluster applies the effects ahead of the record
// it then refuses.
type lateCommit struct {
	store.Store
	late atomic.Bool
	lost chan struct{} // closed once the late commit was refused
}

// lease is l, or a lapsed copy of it for the first commit.
func (c *lateCommit) lease(l *store.Lease) (*store.Lease, bool) {
	if !c.late.CompareAndSwap(true, false) {
		return l, false
	}
	stale := *l
	stale.Token = "lapsed"
	return &stale, true
}

func (c *lateCommit) CommitStep(ctx context.Context, l *store.Lease, s store.Step, emit []store.Publication, fx store.Effects) error {
	l, late := c.lease(l)
	err := c.Store.CommitStep(ctx, l, s, emit, fx)
	if late {
		close(c.lost)
	}
	return err
}

func (c *lateCommit) CommitStepsCount(ctx context.Context, l *store.Lease, steps []store.StepCommit) (int64, error) {
	l, late := c.lease(l)
	n, err := c.Store.CommitStepsCount(ctx, l, steps)
	if late {
		close(c.lost)
	}
	return n, err
}

// TestStepEffectsAheadApplyOnce runs steps on a partitioned store on a
// Redis Cluster, where a step's effects commit ahead of its record
// (redis.Store.EffectsAhead). The first execution's commit applies its
// writes and is refused its record (its lease lapsed); the run's next
// owner executes it again, and its commit finds the writes applied: it
// records the steps as the first execution made them, and the worker
// hands the run back at once (store.ErrSuperseded), which then completes
// from the recorded steps. Each write applied once, and the run returns
// what the first execution saw:
//   - a StepTx incrementing a counter;
//   - a StepStore setting a flag and a StepIncr counting (one counted
//     commit), whose second execution reads the flag the first set and
//     returns without counting: the count the first made is recorded with
//     its value.
func TestStepEffectsAheadApplyOnce(t *testing.T) {
	t.Parallel()
	cl := redistest.StartClusterT(t)
	var n atomic.Int32
	onCluster := backendtest.Backend{Name: "cluster-partitioned", Open: func(t *testing.T, ctx context.Context, clock clockwork.Clock) (store.Store, *backendtest.Native) {
		p := fmt.Sprintf("ahead%d", n.Add(1))
		st, err := redis.Open(ctx, cl.URL(), redis.Options{Clock: clock, Prefix: p + ":", SitePrefix: p + "-site:{site}:", Partitions: 3})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if !st.EffectsAhead() {
			t.Fatal("a partitioned store on a cluster commits effects with their record")
		}
		return st, nil
	}}
	cases := []struct {
		name       string
		handler    func(bodies *atomic.Int32) engine.Handler
		wantOutput string
		key        string
	}{
		{"StepTx", func(bodies *atomic.Int32) engine.Handler {
			return func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.StepTx(ctx, r, "increment", func(ctx context.Context, tx *store.Tx) (string, error) {
					n, err := tx.IncrBy(ctx, "counter", 1, 0)
					return fmt.Sprintf("execution %d saw %d", bodies.Add(1), n), err
				})
			}
		}, `"execution 1 saw 1"`, "counter"},
		{"counted step, then another path", func(bodies *atomic.Int32) engine.Handler {
			return func(ctx context.Context, r *engine.Run) (any, error) {
				bodies.Add(1)
				first, err := engine.StepStore(ctx, r, "flag", func(ctx context.Context, tx *store.Tx) (bool, error) {
					if _, err := tx.Get(ctx, "flag"); err == nil {
						return false, nil
					}
					return true, tx.Set(ctx, "flag", "1", 0)
				})
				if err != nil || !first {
					return "skipped", err
				}
				return engine.StepIncr(ctx, r, "count", "views", 1, 0)
			}
		}, `1`, "views"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			late := &lateCommit{lost: make(chan struct{})}
			late.late.Store(true)
			var bodies atomic.Int32
			b := setup(t, onCluster, options{leaseTTL: time.Minute, wrap: func(st store.Store) store.Store { late.Store = st; return late }},
				engine.Function{ID: "ahead", Triggers: []engine.Trigger{{Event: "test/ahead"}}, Handler: c.handler(&bodies)})
			id := oneRun(t, b.send(t, "test/ahead", `{}`))
			select {
			case <-late.lost:
			case <-time.After(10 * time.Second):
				t.Fatal("timed out waiting for the late commit")
			}
			if v, err := b.st.Get(b.ctx, c.key); err != nil || v != "1" {
				t.Errorf("%s after the late commit = %q, %v; want 1 (applied ahead of the refused record)", c.key, v, err)
			}
			b.clock.Advance(2 * time.Minute) // the lease lapses; the pool claims the run again
			run := b.waitStatus(t, id, store.StatusCompleted)
			if got := string(run.Output); got != c.wantOutput {
				t.Errorf("output = %s, want %s, the first execution's", got, c.wantOutput)
			}
			if v, err := b.st.Get(b.ctx, c.key); err != nil || v != "1" {
				t.Errorf("%s = %q, %v; want 1", c.key, v, err)
			}
			if n := bodies.Load(); n < 2 {
				t.Errorf("the handler ran %d times, want 2 or more (the second execution's commit found the first's writes)", n)
			}
		})
	}
}

// TestOverflowingBatchAppliesNothing: a run's deferred steps commit
// together; the second's blind increment would overflow. The store
// refuses the batch before writing anything, and the engine, executing
// the run again step by step, applies the first step's increment once.
func TestOverflowingBatchAppliesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{}, engine.Function{
			ID: "overflow", Triggers: []engine.Trigger{{Event: "test/overflow"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				for _, k := range []string{"views", "big"} {
					if _, err := engine.StepStore(ctx, r, k, func(ctx context.Context, tx *store.Tx) (int, error) {
						return 0, tx.IncrByBlind(ctx, k, 1, 0)
					}); err != nil {
						return nil, err
					}
				}
				return "done", nil
			},
		})
		if err := b.st.Set(b.ctx, "big", "9223372036854775807", 0); err != nil {
			t.Fatal(err)
		}
		id := oneRun(t, b.send(t, "test/overflow", `{}`))
		b.waitFor(t, "the run to finish", func() bool { return b.run(t, id).Status.Finished() })
		if v, _ := b.st.Get(b.ctx, "views"); v != "1" {
			t.Fatalf("views = %s; the step views applied more than once (run %s)", v, b.run(t, id).Status)
		}
	})
}
