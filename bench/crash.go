package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// cyberRecoveryWait bounds how long cyberdrew may take to recover.
const cyberRecoveryWait = 2 * time.Minute

// runCrash starts a worker process holding e.size.crash jobs in flight
// (part one done, part two blocking), starts a second worker process,
// kill -9s the first (on SQLite, one daemon per file: kill -9s it, then
// starts the second) and measures from the kill until the second has run
// part two of every job, counting part ones executed again.
func runCrash(ctx context.Context, e *env) ([]row, error) {
	n := e.size.crash
	rec := row{scenario: fmt.Sprintf("crash recovery: %d in-flight jobs, kill -9 of the worker, a second worker running: s until every job runs again ↓ (Redis: %s)", n, aofAlways.name)}
	dup := row{scenario: "crash recovery: duplicated side effects (completed first parts run again) ↓"}
	rec.sqlite, dup.sqlite = e.crash(ctx, systemCyber, backendSQLite, cyberRecoveryWait)
	switch {
	case e.redis == nil:
		rec.redis, dup.redis, rec.asynq, dup.asynq = noRedis, noRedis, noRedis, noRedis
	default:
		if err := e.redis.reset(ctx, aofAlways); err != nil {
			return nil, err
		}
		rec.redis, dup.redis = e.crash(ctx, systemCyber, backendRedis, cyberRecoveryWait)
		if e.size.asynqRecovery == 0 {
			rec.asynq = note("not measured with -quick: asynq reclaims a task ≥ 30 s after its 30 s lease lapses, on a 1 min recoverer tick")
			break
		}
		if err := e.redis.reset(ctx, aofAlways); err != nil {
			return nil, err
		}
		rec.asynq, dup.asynq = e.crash(ctx, systemAsynq, backendRedis, e.size.asynqRecovery)
	}
	return []row{rec, dup}, nil
}

// crash measures one system; it returns the recovery time and the
// duplicated side effects.
func (e *env) crash(ctx context.Context, system, backend string, wait time.Duration) (cell, cell) {
	n := e.size.crash
	dir, err := e.scratch()
	if err != nil {
		return failure(err), cell{}
	}
	o := childOptions{system: system, backend: backend, dir: dir, jobs: n, workers: n, lease: e.size.crashLease, blocking: true}
	switch {
	case system == systemAsynq:
		o.redis = e.redis.addr
	case backend == backendRedis:
		o.redis = e.redis.url()
	}
	first, err := e.startChild(roleCrash, o)
	if err != nil {
		return failure(err), cell{}
	}
	defer first.kill()
	// Every job has done part one and is blocked in part two.
	blocked := map[int]bool{}
	deadline := time.After(time.Minute)
	for len(blocked) < n {
		what, job, err := first.next(ctx, deadline)
		if err != nil {
			return failure(fmt.Errorf("first worker: %d of %d jobs in flight: %w", len(blocked), n, err)), cell{}
		}
		if what == "block" {
			blocked[job] = true
		}
	}
	// One daemon serves a SQLite file (the store refuses a second), so
	// there the second worker starts after the kill, as a restart does, and
	// its start-up counts; on Redis it is running already.
	restart := backend == backendSQLite
	var killed time.Time
	if restart {
		first.kill()
		killed = time.Now()
	}
	o.jobs, o.blocking = 0, false
	second, err := e.startChild(roleCrash, o)
	if err != nil {
		return failure(err), cell{}
	}
	defer second.stop()
	if _, err := second.expect(ctx, "ready", time.Minute); err != nil {
		return failure(fmt.Errorf("second worker: %w", err)), cell{}
	}
	if !restart {
		first.kill()
		killed = time.Now()
	}
	ran, again := map[int]bool{}, 0
	deadline = time.After(wait)
	for len(ran) < n {
		what, job, err := second.next(ctx, deadline)
		if errors.Is(err, errWaitOver) {
			return note(fmt.Sprintf("> %.0f s (%d of %d ran again)", wait.Seconds(), len(ran), n)), figure("%.0f", float64(again))
		}
		if err != nil {
			return failure(fmt.Errorf("second worker: %w", err)), cell{}
		}
		switch what {
		case "first":
			again++
		case "second":
			ran[job] = true
		}
	}
	took := time.Since(killed)
	e.logf("crash %s %s: %d jobs ran again %v after the kill, %d first parts again", system, backend, n, took.Round(time.Millisecond), again)
	return figure("%.1f", took.Seconds()), figure("%.0f", float64(again))
}
