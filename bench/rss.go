package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// rssBatch is how many events one intake request carries while the RSS
// row queues its runs.
const rssBatch = 500

// runRSS reads the resident memory of a worker process (the real daemon
// for cyberdrew, an asynq server) idle, then with e.size.queued runs or
// tasks queued and due in an hour, so none runs.
func runRSS(ctx context.Context, e *env) ([]row, error) {
	q := e.size.queued
	idle := row{scenario: fmt.Sprintf("RSS of the worker process, idle %v after start, MB ↓", e.size.settle)}
	full := row{scenario: fmt.Sprintf("RSS of the worker process with %d queued runs / tasks (due in 1 h), MB ↓", q)}
	mem := row{scenario: fmt.Sprintf("Redis used_memory with %d queued runs / tasks, MB ↓", q)}
	idle.sqlite, full.sqlite = e.rss(ctx, systemCyber, backendSQLite)
	if e.redis == nil {
		idle.redis, full.redis, idle.asynq, full.asynq = noRedis, noRedis, noRedis, noRedis
		return []row{idle, full}, nil
	}
	if err := e.redis.reset(ctx, aofAlways); err != nil {
		return nil, err
	}
	idle.redis, full.redis = e.rss(ctx, systemCyber, backendRedis)
	mem.redis = e.redisMemory(ctx)
	if err := e.redis.reset(ctx, aofAlways); err != nil {
		return nil, err
	}
	idle.asynq, full.asynq = e.rss(ctx, systemAsynq, backendRedis)
	mem.asynq = e.redisMemory(ctx)
	return []row{idle, full, mem}, nil
}

func mb(bytes int64) cell { return figure("%.1f", float64(bytes)/(1<<20)) }

// redisMemory is the server's used_memory.
func (e *env) redisMemory(ctx context.Context) cell {
	n, err := e.redis.usedMemory(ctx)
	if err != nil {
		return failure(err)
	}
	return mb(n)
}

// rss measures one system's worker process.
func (e *env) rss(ctx context.Context, system, backend string) (cell, cell) {
	dir, err := e.scratch()
	if err != nil {
		return failure(err), cell{}
	}
	o := childOptions{system: system, backend: backend, dir: dir, workers: workers}
	switch {
	case system == systemAsynq:
		o.redis = e.redis.addr
	case backend == backendRedis:
		o.redis = e.redis.url()
	}
	c, err := e.startChild(roleServe, o)
	if err != nil {
		return failure(err), cell{}
	}
	defer c.stop()
	what, addr, err := c.firstLine(ctx)
	if err != nil {
		return failure(err), cell{}
	}
	time.Sleep(e.size.settle) // the settle time is what is measured
	idle, err := c.rss()
	if err != nil {
		return failure(err), cell{}
	}
	q := e.size.queued
	later := time.Now().Add(time.Hour)
	switch what {
	case "addr":
		err = queueHTTP(ctx, "http://"+addr+"/e/bench-key", q, later)
	default:
		err = queueAsynq(ctx, e.redis.addr, q, later)
	}
	if err != nil {
		return mb(idle), failure(err)
	}
	time.Sleep(e.size.settle)
	loaded, err := c.rss()
	if err != nil {
		return mb(idle), failure(err)
	}
	e.logf("rss %s %s: idle %.1f MB, %d queued %.1f MB", system, backend, float64(idle)/(1<<20), q, float64(loaded)/(1<<20))
	return mb(idle), mb(loaded)
}

// firstLine returns the child's first line split in two.
func (c *child) firstLine(ctx context.Context) (string, string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", "", fmt.Errorf("worker process exited: %s", strings.TrimSpace(c.stderr.String()))
		}
		what, rest, _ := strings.Cut(l, " ")
		return what, rest, nil
	case <-time.After(time.Minute):
		return "", "", fmt.Errorf("worker process did not start: %s", strings.TrimSpace(c.stderr.String()))
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
}

// queueHTTP posts n events due at at to the daemon in batches.
func queueHTTP(ctx context.Context, url string, n int, at time.Time) error {
	client := &http.Client{}
	defer client.CloseIdleConnections()
	ts := strconv.FormatInt(at.UnixMilli(), 10)
	now := time.Now()
	for start := 0; start < n; start += rssBatch {
		var b strings.Builder
		b.WriteString("[")
		for i := start; i < min(n, start+rssBatch); i++ {
			if i > start {
				b.WriteString(",")
			}
			b.WriteString(`{"name":"` + eventJob + `","ts":` + ts + `,"data":` + string(payload(i, now)) + `}`)
		}
		b.WriteString("]")
		if err := post(ctx, client, url, []byte(b.String())); err != nil {
			return err
		}
	}
	return nil
}

// queueAsynq enqueues n tasks due at at.
func queueAsynq(ctx context.Context, addr string, n int, at time.Time) error {
	client := asynq.NewClient(asynqConn(addr))
	defer client.Close()
	now := time.Now()
	_, err := concurrently(n, func(i int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(taskNoop, payload(i, now)), asynq.ProcessAt(at))
		return err
	})
	if err != nil {
		return fmt.Errorf("asynq: enqueue: %w", err)
	}
	return nil
}
