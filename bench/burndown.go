package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// cellTimeout bounds one measurement, so a hang fails the cell instead of
// the run.
const cellTimeout = 10 * time.Minute

// countdown closes done when it has been hit n times.
type countdown struct {
	n    int64
	hits atomic.Int64
	done chan struct{}
}

func newCountdown(n int) *countdown { return &countdown{n: int64(n), done: make(chan struct{})} }

func (c *countdown) hit() {
	if c.hits.Add(1) == c.n {
		close(c.done)
	}
}

// wait returns once the countdown reached zero or ctx ended.
func (c *countdown) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d of %d done: %w", c.hits.Load(), c.n, ctx.Err())
	}
}

// runBurnDown queues n no-op jobs, then starts the workers and measures
// until the last one is acknowledged.
func runBurnDown(ctx context.Context, e *env) ([]row, error) {
	n := e.size.burnDown
	var rows []row
	for i, p := range e.redisSettings() {
		rate := row{scenario: fmt.Sprintf("burn-down: %d queued no-op jobs, %d workers, jobs/s ↑ (Redis: %s)", n, workers, p.name)}
		cmds := row{scenario: fmt.Sprintf("Redis commands per executed run / task ↓ (Redis: %s)", p.name)}
		cpu := row{scenario: fmt.Sprintf("Redis server CPU per executed run / task, µs ↓ (Redis: %s)", p.name)}
		if i == 0 {
			rate.sqlite, _ = e.burnCyber(ctx, backendSQLite, n)
		}
		if e.redis == nil {
			rate.redis, rate.asynq = noRedis, noRedis
			rows = append(rows, rate)
			continue
		}
		if err := e.redis.reset(ctx, p); err != nil {
			return rows, err
		}
		var u useCells
		rate.redis, u = e.burnCyber(ctx, backendRedis, n)
		cmds.redis, cpu.redis = u.commands, u.cpu
		if err := e.redis.reset(ctx, p); err != nil {
			return rows, err
		}
		rate.asynq, u = e.burnAsynq(ctx, n)
		cmds.asynq, cpu.asynq = u.commands, u.cpu
		rows = append(rows, rate, cmds, cpu)
	}
	return rows, nil
}

// useCells are the cells of the server's use per job: commands, and CPU
// in µs.
type useCells struct{ commands, cpu cell }

// failedUse is useCells that both fail with err.
func failedUse(err error) useCells { return useCells{failure(err), failure(err)} }

// useSince returns the server's use per job since before: its commands,
// less extra commands the harness issued itself (and the INFO that reads
// them), and its CPU time in µs.
func (e *env) useSince(ctx context.Context, before serverUse, extra, jobs int) useCells {
	if e.redis == nil {
		return useCells{}
	}
	after, err := e.redis.use(ctx)
	if err != nil {
		return failedUse(err)
	}
	return useCells{
		commands: figure("%.1f", float64(after.commands-before.commands-int64(extra)-1)/float64(jobs)),
		cpu:      figure("%.1f", (after.cpu-before.cpu)*1e6/float64(jobs)),
	}
}

// burnCyber returns the rate and, on Redis, the server's use per run.
func (e *env) burnCyber(ctx context.Context, backend string, n int) (cell, useCells) {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	dir, err := e.scratch()
	if err != nil {
		return failure(err), useCells{}
	}
	var before serverUse
	elapsed, err := burn(ctx, cyberOptions{backend: backend, dir: dir, redisURL: e.redisURL(), workers: workers}, n, func() (err error) {
		if backend == backendRedis {
			before, err = e.redis.use(ctx)
		}
		return err
	})
	if err != nil {
		return failure(err), useCells{}
	}
	e.logf("burn-down %s: %d runs in %v", backend, n, elapsed.Round(time.Millisecond))
	// The few NextWake calls of waitIdle are counted; they are noise.
	return rate(n, elapsed), e.useSince(ctx, before, 0, n)
}

// burn queues n no-op runs in the store o opens, then starts the workers
// and returns how long they took to run them all; ready is called just
// before they start. Runs the store already holds that are due more than
// an hour ahead are left alone.
func burn(ctx context.Context, o cyberOptions, n int, ready func() error) (time.Duration, error) {
	cd := newCountdown(n)
	c, err := openCyber(ctx, o, noopFunction(func(*engine.Run) { cd.hit() }))
	if err != nil {
		return 0, err
	}
	defer c.close()
	now := time.Now()
	if err := c.publishMany(ctx, eventJob, n, func(i int) []byte { return payload(i, now) }); err != nil {
		return 0, err
	}
	if err := ready(); err != nil {
		return 0, err
	}
	changes := c.st.Subscribe(ctx)
	start := time.Now()
	if err := c.start(ctx); err != nil {
		return 0, err
	}
	if err := cd.wait(ctx); err != nil {
		return 0, err
	}
	if err := c.waitIdleWithin(ctx, changes, time.Hour/2); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// burnAsynq returns the rate and the server's use per task.
func (e *env) burnAsynq(ctx context.Context, n int) (cell, useCells) {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	client := asynq.NewClient(asynqConn(e.redis.addr))
	defer client.Close()
	now := time.Now()
	if _, err := concurrently(n, func(i int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(taskNoop, payload(i, now)))
		return err
	}); err != nil {
		return failure(fmt.Errorf("asynq: enqueue: %w", err)), useCells{}
	}
	before, err := e.redis.use(ctx)
	if err != nil {
		return failure(err), useCells{}
	}
	cd := newCountdown(n)
	srv := newAsynqServer(e.redis.addr, workers)
	start := time.Now()
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { cd.hit(); return nil })); err != nil {
		return failure(fmt.Errorf("asynq: start: %w", err)), useCells{}
	}
	defer srv.Shutdown()
	if err := cd.wait(ctx); err != nil {
		return failure(err), useCells{}
	}
	polls, err := waitProcessed(ctx, e.redis, n)
	if err != nil {
		return failure(err), useCells{}
	}
	elapsed := time.Since(start)
	e.logf("burn-down asynq: %d tasks in %v", n, elapsed.Round(time.Millisecond))
	return rate(n, elapsed), e.useSince(ctx, before, polls, n)
}
