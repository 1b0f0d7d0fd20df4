package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// samples collects latencies from many goroutines.
type samples struct {
	mu sync.Mutex
	d  []time.Duration
}

// since records the time from the send time in payload p until now.
func (s *samples) since(p []byte) {
	now := time.Now()
	var v parsed
	if err := json.Unmarshal(p, &v); err != nil {
		return
	}
	s.mu.Lock()
	s.d = append(s.d, now.Sub(time.Unix(0, v.Sent)))
	s.mu.Unlock()
}

func (s *samples) sorted() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.d)
	slices.Sort(out)
	return out
}

// openLoop calls send at rate per second for window, each call in its own
// goroutine at its scheduled time whether or not the earlier ones have
// returned, and returns how many it made once all have returned.
func openLoop(ctx context.Context, window time.Duration, perSecond int, send func(i int) error) (int, error) {
	interval := time.Second / time.Duration(perSecond)
	n := int(window / interval)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				wg.Wait()
				return i, ctx.Err()
			}
		}
		wg.Go(func() {
			if err := send(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return n, <-errs
}

// latencyCells are p50, p99 and p99.9 in milliseconds.
type latencyCells [3]cell

func latencyOf(s []time.Duration) latencyCells {
	var out latencyCells
	for i, p := range []float64{0.50, 0.99, 0.999} {
		out[i] = figure("%.2f", float64(percentile(s, p).Microseconds())/1000)
	}
	return out
}

func failed3(err error) latencyCells { c := failure(err); return latencyCells{c, c, c} }

// runLatency sends events at latencyRate per second, open-loop, to idle
// workers and measures from just before each send until its handler starts.
func runLatency(ctx context.Context, e *env) ([]row, error) {
	var rows []row
	for i, p := range e.redisSettings() {
		var sq, rd, aq latencyCells
		if i == 0 {
			sq = e.latencyCyber(ctx, backendSQLite)
		}
		if e.redis == nil {
			rd, aq = latencyCells{noRedis, noRedis, noRedis}, latencyCells{noRedis, noRedis, noRedis}
		} else {
			if err := e.redis.reset(ctx, p); err != nil {
				return rows, err
			}
			rd = e.latencyCyber(ctx, backendRedis)
			if err := e.redis.reset(ctx, p); err != nil {
				return rows, err
			}
			aq = e.latencyAsynq(ctx)
		}
		for j, name := range []string{"p50", "p99", "p99.9"} {
			rows = append(rows, row{
				scenario: fmt.Sprintf("event→start latency %s, ms ↓, %d/s open-loop for %v (Redis: %s)", name, latencyRate, e.size.latency, p.name),
				sqlite:   sq[j], redis: rd[j], asynq: aq[j],
			})
		}
	}
	return rows, nil
}

func (e *env) latencyCyber(ctx context.Context, backend string) latencyCells {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	dir, err := e.scratch()
	if err != nil {
		return failed3(err)
	}
	var s samples
	c, err := openCyber(ctx, cyberOptions{backend: backend, dir: dir, redisURL: e.redisURL(), workers: workers},
		noopFunction(func(r *engine.Run) { s.since(r.Event.Data) }))
	if err != nil {
		return failed3(err)
	}
	defer c.close()
	changes := c.st.Subscribe(ctx)
	if err := c.start(ctx); err != nil {
		return failed3(err)
	}
	n, err := openLoop(ctx, e.size.latency, latencyRate, func(i int) error {
		return c.publish(ctx, eventJob, payload(i, time.Now()))
	})
	if err != nil {
		return failed3(err)
	}
	if err := c.waitIdle(ctx, changes); err != nil {
		return failed3(err)
	}
	got := s.sorted()
	if len(got) != n {
		return failed3(fmt.Errorf("%d runs started, want %d", len(got), n))
	}
	e.logf("latency %s: %d events, p50 %v", backend, n, percentile(got, 0.5))
	return latencyOf(got)
}

func (e *env) latencyAsynq(ctx context.Context) latencyCells {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	var s samples
	srv := newAsynqServer(e.redis.addr, workers)
	if err := srv.Start(asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error { s.since(t.Payload()); return nil })); err != nil {
		return failed3(fmt.Errorf("asynq: start: %w", err))
	}
	defer srv.Shutdown()
	client := asynq.NewClient(asynqConn(e.redis.addr))
	defer client.Close()
	n, err := openLoop(ctx, e.size.latency, latencyRate, func(i int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(taskNoop, payload(i, time.Now())))
		return err
	})
	if err != nil {
		return failed3(fmt.Errorf("asynq: enqueue: %w", err))
	}
	if _, err := waitProcessed(ctx, e.redis, n); err != nil {
		return failed3(err)
	}
	got := s.sorted()
	if len(got) != n {
		return failed3(fmt.Errorf("%d tasks started, want %d", len(got), n))
	}
	e.logf("latency asynq: %d tasks, p50 %v", n, percentile(got, 0.5))
	return latencyOf(got)
}
