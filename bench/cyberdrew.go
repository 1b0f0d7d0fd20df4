package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	redisstore "github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// Backends of cyberdrew, as the table's columns name them.
const (
	backendSQLite = "sqlite"
	backendRedis  = "redis"
)

// cyber is cyberdrew built in-process the way the daemon wires it: a
// store, an engine with the benchmark's functions, and a worker pool that
// runs only once started.
type cyber struct {
	st   store.Store
	eng  *engine.Engine
	pool *engine.WorkerPool
}

// cyberOptions say which store to open and how many workers to run.
type cyberOptions struct {
	backend  string
	dir      string // the SQLite file lives here
	file     string // the SQLite file's name in dir; "" is bench.db
	redisURL string
	workers  int
	lease    time.Duration // 0: the daemon's default, config.DefaultLease
}

// openStore opens the store o names; the SQLite file is dir/file
// (dir/bench.db when file is "").
func openStore(ctx context.Context, o cyberOptions) (store.Store, error) {
	switch o.backend {
	case backendSQLite:
		file := o.file
		if file == "" {
			file = "bench.db"
		}
		return sqlite.Open(ctx, filepath.Join(o.dir, file), sqlite.Options{})
	case backendRedis:
		return redisstore.Open(ctx, o.redisURL, redisstore.Options{})
	}
	return nil, fmt.Errorf("cyberdrew: unknown backend %q", o.backend)
}

// openCyber opens the store and registers fns; the pool is not started.
func openCyber(ctx context.Context, o cyberOptions, fns ...engine.Function) (*cyber, error) {
	st, err := openStore(ctx, o)
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.Options{Store: st})
	if err == nil {
		err = eng.Register(fns...)
	}
	if err == nil {
		err = eng.Start(ctx)
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("cyberdrew: %w", err)
	}
	lease := o.lease
	if lease <= 0 {
		lease = config.DefaultLease
	}
	return &cyber{st: st, eng: eng, pool: engine.NewWorkerPool(eng, engine.PoolOptions{Workers: o.workers, LeaseTTL: lease})}, nil
}

// start starts the worker pool.
func (c *cyber) start(ctx context.Context) error { return c.pool.Start(ctx) }

// close stops the pool (handing back what it still holds at once), the
// engine and the store.
func (c *cyber) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	expired, stop := context.WithCancel(ctx)
	stop()
	return errors.Join(c.pool.Stop(expired), c.eng.Stop(ctx), c.st.Close())
}

// publish sends one event named name with data through the engine's intake.
func (c *cyber) publish(ctx context.Context, name string, data []byte) error {
	_, err := c.eng.Publish(ctx, []engine.IncomingEvent{{Name: name, Data: json.RawMessage(data)}})
	return err
}

// publishMany sends n events built by data(i), in batches of 500.
func (c *cyber) publishMany(ctx context.Context, name string, n int, data func(i int) []byte) error {
	const batch = 500
	for start := 0; start < n; start += batch {
		evs := make([]engine.IncomingEvent, 0, batch)
		for i := start; i < min(n, start+batch); i++ {
			evs = append(evs, engine.IncomingEvent{Name: name, Data: json.RawMessage(data(i))})
		}
		if _, err := c.eng.Publish(ctx, evs); err != nil {
			return fmt.Errorf("cyberdrew: publish: %w", err)
		}
	}
	return nil
}

// waitIdle returns once no run is pending, re-checking on every change the
// store announces (and at least every 50 ms, in case the harness's
// subscription lagged).
func (c *cyber) waitIdle(ctx context.Context, changes <-chan store.Change) error {
	return c.waitIdleWithin(ctx, changes, 0)
}

// waitIdleWithin is waitIdle for the runs due within horizon from now (0:
// every pending run): runs queued further ahead do not count.
func (c *cyber) waitIdleWithin(ctx context.Context, changes <-chan store.Change, horizon time.Duration) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		at, pending, err := c.st.NextWake(ctx)
		if err != nil {
			return fmt.Errorf("cyberdrew: next wake: %w", err)
		}
		if !pending || (horizon > 0 && at.After(time.Now().Add(horizon))) {
			return nil
		}
		select {
		case <-changes:
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
