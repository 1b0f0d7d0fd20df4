package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// eventFlow starts one run of the multi-step function.
const eventFlow = "bench/flow.requested"

// stepsFunction runs stepsCount no-op steps, each recorded durably, then
// calls onDone with its trigger event's data.
func stepsFunction(onDone func(data []byte)) engine.Function {
	return engine.Function{
		ID:       "steps",
		Triggers: []engine.Trigger{{Event: eventFlow}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			for i := range stepsCount {
				if _, err := engine.Step(ctx, r, "step-"+strconv.Itoa(i), func(context.Context) (int, error) { return i, nil }); err != nil {
					return nil, err
				}
			}
			onDone(r.Event.Data)
			return nil, nil
		},
	}
}

// chainPayload is one asynq task of a chain: the payload plus its place.
type chainPayload struct {
	Job  int    `json:"job"`
	Sent int64  `json:"sent"`
	Step int    `json:"step"`
	Pad  string `json:"pad"`
}

// chainTask is the task of p, padded to payloadSize bytes.
func chainTask(p chainPayload) *asynq.Task {
	raw, _ := json.Marshal(p)
	p.Pad = strings.Repeat("x", max(0, payloadSize-len(raw)))
	raw, _ = json.Marshal(p)
	return asynq.NewTask(taskChain, raw)
}

// probe is what one phase of a multi-step measurement records: each
// flow's latency and how many flows are done.
type probe struct {
	s  samples
	cd *countdown
}

// phases hands the current probe to the handlers.
type phases struct{ cur atomic.Pointer[probe] }

// next starts a phase expecting n flows.
func (ph *phases) next(n int) *probe {
	p := &probe{cd: newCountdown(n)}
	ph.cur.Store(p)
	return p
}

// done records one finished flow whose payload is data.
func (ph *phases) done(data []byte) {
	p := ph.cur.Load()
	p.s.since(data)
	p.cd.hit()
}

// flowRun is one measurement of the multi-step rows.
type flowRun struct {
	burst   cell // flows per second, started all at once
	latency latencyCells
}

// runSteps compares a stepsCount-step function with stepsCount chained
// asynq tasks (each enqueuing the next from its handler): completions per
// second with e.size.flows started at once, then the latency of a flow at
// stepsRate flows per second, open-loop.
func runSteps(ctx context.Context, e *env) ([]row, error) {
	var rows []row
	for i, p := range e.redisSettings() {
		var sq, rd, aq flowRun
		if i == 0 {
			sq = e.stepsCyber(ctx, backendSQLite)
		}
		if e.redis == nil {
			rd = flowRun{burst: noRedis, latency: latencyCells{noRedis, noRedis, noRedis}}
			aq = rd
		} else {
			if err := e.redis.reset(ctx, p); err != nil {
				return rows, err
			}
			rd = e.stepsCyber(ctx, backendRedis)
			if err := e.redis.reset(ctx, p); err != nil {
				return rows, err
			}
			aq = e.stepsAsynq(ctx)
		}
		what := fmt.Sprintf("%d-step function vs %d chained tasks", stepsCount, stepsCount)
		rows = append(rows,
			row{scenario: fmt.Sprintf("%s: %d flows at once, flows/s ↑ (Redis: %s)", what, e.size.flows, p.name), sqlite: sq.burst, redis: rd.burst, asynq: aq.burst},
			row{scenario: fmt.Sprintf("%s: latency p50, ms ↓, %d flows/s for %v (Redis: %s)", what, stepsRate, e.size.flowWindow, p.name), sqlite: sq.latency[0], redis: rd.latency[0], asynq: aq.latency[0]},
			row{scenario: fmt.Sprintf("%s: latency p99, ms ↓, %d flows/s for %v (Redis: %s)", what, stepsRate, e.size.flowWindow, p.name), sqlite: sq.latency[1], redis: rd.latency[1], asynq: aq.latency[1]},
		)
	}
	return rows, nil
}

func failedFlow(err error) flowRun { return flowRun{burst: failure(err), latency: failed3(err)} }

func (e *env) stepsCyber(ctx context.Context, backend string) flowRun {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	dir, err := e.scratch()
	if err != nil {
		return failedFlow(err)
	}
	var ph phases
	c, err := openCyber(ctx, cyberOptions{backend: backend, dir: dir, redisURL: e.redisURL(), workers: workers},
		stepsFunction(ph.done))
	if err != nil {
		return failedFlow(err)
	}
	defer c.close()
	changes := c.st.Subscribe(ctx)
	if err := c.start(ctx); err != nil {
		return failedFlow(err)
	}
	m := e.size.flows
	burst := ph.next(m)
	start := time.Now()
	if _, err := concurrently(m, func(i int) error { return c.publish(ctx, eventFlow, payload(i, start)) }); err != nil {
		return failedFlow(err)
	}
	err = burst.cd.wait(ctx)
	if err == nil {
		err = c.waitIdle(ctx, changes)
	}
	if err != nil {
		return failedFlow(err)
	}
	var out flowRun
	out.burst = rate(m, time.Since(start))

	paced := ph.next(int(e.size.flowWindow / (time.Second / stepsRate)))
	if _, err := openLoop(ctx, e.size.flowWindow, stepsRate, func(i int) error {
		return c.publish(ctx, eventFlow, payload(i, time.Now()))
	}); err != nil {
		out.latency = failed3(err)
		return out
	}
	if err := paced.cd.wait(ctx); err != nil {
		out.latency = failed3(err)
		return out
	}
	out.latency = latencyOf(paced.s.sorted())
	e.logf("steps %s: %s flows/s, p50 %s ms", backend, out.burst.text, out.latency[0].text)
	return out
}

func (e *env) stepsAsynq(ctx context.Context) flowRun {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	client := asynq.NewClient(asynqConn(e.redis.addr))
	defer client.Close()
	var ph phases
	srv := newAsynqServer(e.redis.addr, workers)
	handler := func(ctx context.Context, t *asynq.Task) error {
		var p chainPayload
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return err
		}
		if p.Step == stepsCount-1 {
			ph.done(t.Payload())
			return nil
		}
		p.Step++
		_, err := client.EnqueueContext(ctx, chainTask(p))
		return err
	}
	m := e.size.flows
	burst := ph.next(m)
	if err := srv.Start(asynq.HandlerFunc(handler)); err != nil {
		return failedFlow(fmt.Errorf("asynq: start: %w", err))
	}
	defer srv.Shutdown()
	start := time.Now()
	if _, err := concurrently(m, func(i int) error {
		_, err := client.EnqueueContext(ctx, chainTask(chainPayload{Job: i, Sent: start.UnixNano()}))
		return err
	}); err != nil {
		return failedFlow(fmt.Errorf("asynq: enqueue: %w", err))
	}
	if err := burst.cd.wait(ctx); err != nil {
		return failedFlow(err)
	}
	if _, err := waitProcessed(ctx, e.redis, m*stepsCount); err != nil {
		return failedFlow(err)
	}
	var out flowRun
	out.burst = rate(m, time.Since(start))

	paced := ph.next(int(e.size.flowWindow / (time.Second / stepsRate)))
	if _, err := openLoop(ctx, e.size.flowWindow, stepsRate, func(i int) error {
		_, err := client.EnqueueContext(ctx, chainTask(chainPayload{Job: i, Sent: time.Now().UnixNano()}))
		return err
	}); err != nil {
		out.latency = failed3(fmt.Errorf("asynq: enqueue: %w", err))
		return out
	}
	if err := paced.cd.wait(ctx); err != nil {
		out.latency = failed3(err)
		return out
	}
	out.latency = latencyOf(paced.s.sorted())
	e.logf("steps asynq: %s flows/s, p50 %s ms", out.burst.text, out.latency[0].text)
	return out
}
