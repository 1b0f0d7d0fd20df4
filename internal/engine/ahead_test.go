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

// lateCommit is a store whose first step commit is made under a lease
// the run no longer holds, as a worker's whose lease lapsed while the
// commit was under way: a partitioned store on a Cluster applies the
// effects ahead of the record it then refuses.
type lateCommit struct {
	store.Store
	late atomic.Bool
	lost chan struct{} // closed once the late commit was refused
}

func (c *lateCommit) CommitStep(ctx context.Context, l *store.Lease, s store.Step, emit []store.Publication, fx store.Effects) error {
	if !c.late.CompareAndSwap(true, false) {
		return c.Store.CommitStep(ctx, l, s, emit, fx)
	}
	stale := *l
	stale.Token = "lapsed"
	err := c.Store.CommitStep(ctx, &stale, s, emit, fx)
	close(c.lost)
	return err
}

// TestStepEffectsAheadApplyOnce runs a StepTx on a partitioned store on
// a Redis Cluster, where a step's effects commit ahead of its record
// (redis.Store.EffectsAhead). The first execution's commit applies its
// increment and is refused its record (its lease lapsed); the run's next
// owner executes the step again, and its commit finds the increment
// applied: it records the step as the first execution made it, and the
// worker hands the run back at once (store.ErrSuperseded), which then
// completes from the recorded step. The counter went up once, and the run
// returns the value the first execution saw.
func TestStepEffectsAheadApplyOnce(t *testing.T) {
	t.Parallel()
	cl := redistest.StartClusterT(t)
	onCluster := backendtest.Backend{Name: "cluster-partitioned", Open: func(t *testing.T, ctx context.Context, clock clockwork.Clock) (store.Store, *backendtest.Native) {
		st, err := redis.Open(ctx, cl.URL(), redis.Options{Clock: clock, Prefix: "ahead:", SitePrefix: "ahead-site:{site}:", Partitions: 3})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if !st.EffectsAhead() {
			t.Fatal("a partitioned store on a cluster commits effects with their record")
		}
		return st, nil
	}}
	c := &lateCommit{lost: make(chan struct{})}
	c.late.Store(true)
	var bodies atomic.Int32
	b := setup(t, onCluster, options{leaseTTL: time.Minute, wrap: func(st store.Store) store.Store { c.Store = st; return c }},
		engine.Function{
			ID: "count", Triggers: []engine.Trigger{{Event: "test/count"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.StepTx(ctx, r, "increment", func(ctx context.Context, tx *store.Tx) (string, error) {
					n, err := tx.IncrBy(ctx, "counter", 1, 0)
					return fmt.Sprintf("execution %d saw %d", bodies.Add(1), n), err
				})
			},
		})
	id := oneRun(t, b.send(t, "test/count", `{}`))
	select {
	case <-c.lost:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the late commit")
	}
	if v, err := b.st.Get(b.ctx, "counter"); err != nil || v != "1" {
		t.Errorf("counter after the late commit = %q, %v; want 1 (applied ahead of the refused record)", v, err)
	}
	b.clock.Advance(2 * time.Minute) // the lease lapses; the pool claims the run again
	run := b.waitStatus(t, id, store.StatusCompleted)
	if got := string(run.Output); got != `"execution 1 saw 1"` {
		t.Errorf("output = %s, want the first execution's", got)
	}
	if v, err := b.st.Get(b.ctx, "counter"); err != nil || v != "1" {
		t.Errorf("counter = %q, %v; want 1", v, err)
	}
	if n := bodies.Load(); n != 2 {
		t.Errorf("the step's body ran %d times, want 2 (the second execution's commit found the first's effects)", n)
	}
}
