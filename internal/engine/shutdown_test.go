package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
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
