package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// TestStopIsBoundedWhenAHandlerIgnoresItsContext: a handler that never
// looks at its context cannot hold Stop past its deadline; Stop names the
// run it left behind.
func TestStopIsBoundedWhenAHandlerIgnoresItsContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		started := make(chan string, 1)
		stuck := make(chan struct{})
		t.Cleanup(func() { close(stuck) })
		b := setup(t, be, options{noPool: true}, engine.Function{
			ID: "deaf", Triggers: []engine.Trigger{{Event: "test/deaf"}},
			Handler: func(_ context.Context, r *engine.Run) (any, error) {
				started <- r.ID
				<-stuck // ignores its context
				return nil, nil
			},
		})
		pool := engine.NewWorkerPool(b.eng, engine.PoolOptions{Workers: 2, LeaseTTL: time.Hour, Owner: "deaf"})
		if err := pool.Start(b.ctx); err != nil {
			t.Fatal(err)
		}
		id := oneRun(t, b.send(t, "test/deaf", `{}`))
		receive(t, started, "the run to start")

		ctx, cancel := context.WithCancel(b.ctx)
		cancel() // the shutdown timeout has passed
		stopped := make(chan error, 1)
		go func() { stopped <- pool.Stop(ctx) }()
		select {
		case err := <-stopped:
			if err == nil || !strings.Contains(err.Error(), id) {
				t.Errorf("Stop = %v, want an error naming run %s", err, id)
			}
		case <-time.After(10 * time.Second): // a guard: Stop hangs
			t.Fatalf("Stop did not return with a handler ignoring its context")
		}
		select {
		case <-pool.Done():
		default:
			t.Errorf("Done is not closed after Stop")
		}
	})
}

// stopRace is a store whose first claim after arm is in flight when the
// pool that subscribed after arm begins to stop: it waits for that pool's
// subscription to end (Stop ends it), then is applied whether or not its
// caller still waits, as a call sent down the Redis store's pipeline is.
// A caller whose context ended meanwhile gets its error, not the leases.
type stopRace struct {
	store.Store
	mu      sync.Mutex
	armed   bool
	poolCtx context.Context // the context of the pool's subscription
	claimed atomic.Bool
	entered chan struct{}
}

func (s *stopRace) arm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = true
}

func (s *stopRace) Subscribe(ctx context.Context) <-chan store.Change {
	s.mu.Lock()
	if s.armed && s.poolCtx == nil {
		s.poolCtx = ctx
	}
	s.mu.Unlock()
	return s.Store.Subscribe(ctx)
}

func (s *stopRace) Claim(ctx context.Context, owner string, n int, ttl time.Duration) ([]store.Lease, error) {
	s.mu.Lock()
	poolCtx := s.poolCtx
	s.mu.Unlock()
	if poolCtx == nil || s.claimed.Swap(true) {
		return s.Store.Claim(ctx, owner, n, ttl)
	}
	close(s.entered)
	select {
	case <-poolCtx.Done():
	case <-time.After(10 * time.Second): // a guard: the pool never stopped
		return nil, errors.New("stopRace: the pool's subscription did not end")
	}
	leases, err := s.Store.Claim(context.WithoutCancel(ctx), owner, n, ttl)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return leases, err
}

// TestClaimInFlightAtStopHandsItsRunsBack stops a pool while its claim is
// in flight, a claim the store applies anyway: the run it leased is not
// executed but handed back at once, not left leased to the stopped pool
// until the lease lapses.
func TestClaimInFlightAtStopHandsItsRunsBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var executions atomic.Int32
		racer := &stopRace{entered: make(chan struct{})}
		b := setup(t, be, options{noPool: true, wrap: func(st store.Store) store.Store { racer.Store = st; return racer }},
			engine.Function{
				ID: "raced", Triggers: []engine.Trigger{{Event: "test/raced"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					executions.Add(1)
					return nil, nil
				},
			})
		id := oneRun(t, b.send(t, "test/raced", `{}`))
		racer.arm()
		pool := engine.NewWorkerPool(b.eng, engine.PoolOptions{Workers: 2, LeaseTTL: time.Hour, Owner: "stopping"})
		if err := pool.Start(b.ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-racer.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the pool to claim")
		}
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		if err := pool.Stop(ctx); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if r := b.run(t, id); r.LeaseOwner != "" || !r.AvailableAt.Equal(b.clock.Now()) {
			t.Fatalf("after a claim in flight at Stop the run is %+v, want handed back for now", r)
		}
		if n := executions.Load(); n != 0 {
			t.Errorf("the stopping pool executed the run %d times, want 0", n)
		}
		b.startPool(t, time.Hour, "new")
		b.waitStatus(t, id, store.StatusCompleted)
	})
}
