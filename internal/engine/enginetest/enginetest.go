// Package enginetest holds helpers for tests that run an engine: starting a
// worker pool that stops when the test ends. It lives beside the engine, not
// under internal/store, so that nothing under the store imports the engine.
package enginetest

import (
	"context"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// StartPool starts a worker pool on eng and stops it when the test ends.
func StartPool(t *testing.T, ctx context.Context, eng *engine.Engine, opts engine.PoolOptions) *engine.WorkerPool {
	t.Helper()
	pool := engine.NewWorkerPool(eng, opts)
	if err := pool.Start(ctx); err != nil {
		t.Fatalf("start pool: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pool.Stop(ctx)
	})
	return pool
}
