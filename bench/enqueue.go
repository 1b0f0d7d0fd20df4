package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/engine"
)

// Event names: eventJob starts one no-op run, eventPlain starts nothing.
const (
	eventJob   = "bench/job.requested"
	eventPlain = "bench/plain.recorded"
)

// noopFunction runs once per eventJob and calls onRun (when set) as it starts.
func noopFunction(onRun func(r *engine.Run)) engine.Function {
	return engine.Function{
		ID:       "noop",
		Triggers: []engine.Trigger{{Event: eventJob}},
		Handler: func(_ context.Context, r *engine.Run) (any, error) {
			if onRun != nil {
				onRun(r)
			}
			return nil, nil
		},
	}
}

// concurrently calls do n times from producers goroutines and returns how
// long that took.
func concurrently(n int, do func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	start := time.Now()
	for range producers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	return elapsed, <-errs
}

// rate is n per elapsed, as a cell.
func rate(n int, elapsed time.Duration) cell { return figure("%.0f", float64(n)/elapsed.Seconds()) }

// runEnqueue measures intake: producers goroutines each sending one event
// (one task) per call, in-process and through HTTP.
func runEnqueue(ctx context.Context, e *env) ([]row, error) {
	n := e.size.enqueue
	var rows []row
	var floor cell // the HTTP floor, measured once
	for i, p := range e.redisSettings() {
		in := row{scenario: fmt.Sprintf("enqueue in-process, %d producers, events/s ↑ (Redis: %s)", producers, p.name)}
		web := row{scenario: fmt.Sprintf("enqueue through HTTP, %d producers, one event per request, events/s ↑ (Redis: %s)", producers, p.name)}
		cmds := row{scenario: fmt.Sprintf("Redis commands per enqueued event / task ↓ (Redis: %s)", p.name)}
		cpu := row{scenario: fmt.Sprintf("Redis server CPU per enqueued event / task, µs ↓ (Redis: %s)", p.name)}
		plain := row{
			scenario: fmt.Sprintf("intake alone: in-process, %d producers, events that start no run, events/s ↑ (Redis: %s)", producers, p.name),
			asynq:    note("no equivalent"),
		}
		if i == 0 {
			in.sqlite = cellOf(e.enqueueCyber(ctx, backendSQLite, eventJob, n))
			web.sqlite = cellOf(e.enqueueHTTP(ctx, backendSQLite, n))
			plain.sqlite = cellOf(e.enqueueCyber(ctx, backendSQLite, eventPlain, n))
			floor = cellOf(httpFloor(ctx, n))
		}
		if e.redis == nil {
			in.redis, in.asynq, web.redis, web.asynq, cmds.redis, cmds.asynq, plain.redis = noRedis, noRedis, noRedis, noRedis, noRedis, noRedis, noRedis
		} else {
			var u useCells
			plain.redis, _ = e.withCommands(ctx, p, n, func() (cell, error) { return e.enqueueCyber(ctx, backendRedis, eventPlain, n) })
			in.redis, u = e.withCommands(ctx, p, n, func() (cell, error) { return e.enqueueCyber(ctx, backendRedis, eventJob, n) })
			cmds.redis, cpu.redis = u.commands, u.cpu
			in.asynq, u = e.withCommands(ctx, p, n, func() (cell, error) { return e.enqueueAsynq(ctx, n) })
			cmds.asynq, cpu.asynq = u.commands, u.cpu
			web.redis, _ = e.withCommands(ctx, p, n, func() (cell, error) { return e.enqueueHTTP(ctx, backendRedis, n) })
			web.asynq = in.asynq
			if web.asynq.ok {
				web.asynq.text += " (Client.Enqueue)"
			}
		}
		rows = append(rows, in, web, ofFloor(web, floor, p))
		if e.redis != nil {
			rows = append(rows, cmds, cpu)
		}
		rows = append(rows, plain)
	}
	return rows, nil
}

// ofFloor is the row saying how close the HTTP intake (web) came to the
// HTTP floor: its events/s as a share of the floor's requests/s.
func ofFloor(web row, floor cell, p persistence) row {
	r := row{asynq: note("—")}
	if floor.ok {
		r.scenario = fmt.Sprintf("enqueue through HTTP / the HTTP floor (the same %d clients against a handler that stores nothing: %s requests/s) ↑ (Redis: %s)", producers, floor.text, p.name)
	} else {
		r.scenario = fmt.Sprintf("enqueue through HTTP / the HTTP floor (%s) ↑ (Redis: %s)", floor.text, p.name)
	}
	share := func(c cell) cell {
		if !c.ok || !floor.ok {
			return note("—")
		}
		return figure("%.2f", c.value/floor.value)
	}
	r.sqlite, r.redis = share(web.sqlite), share(web.redis)
	return r
}

// httpFloor measures what the enqueue-through-HTTP rows cannot beat on
// this machine: the same producers and client posting the same requests,
// one at a time each, to a loopback server whose handler reads the body
// and answers the event API's acknowledgement without storing anything.
// Its requests/s bound the daemon's intake from above, as the machine's
// cores are shared by the clients, the server and Redis.
func httpFloor(ctx context.Context, n int) (cell, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return cell{}, err
	}
	ack := []byte(`{"ids":["01KBWZ000000000000000FLOOR"],"status":200}`)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(ack)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * producers, MaxIdleConnsPerHost: 2 * producers}}
	defer client.CloseIdleConnections()
	url := "http://" + ln.Addr().String() + "/e/bench-key"
	now := time.Now()
	later := strconv.FormatInt(now.Add(time.Hour).UnixMilli(), 10)
	elapsed, err := concurrently(n, func(i int) error {
		body := `{"name":"` + eventJob + `","ts":` + later + `,"data":` + string(payload(i, now)) + `}`
		return post(ctx, client, url, []byte(body))
	})
	if err != nil {
		return cell{}, fmt.Errorf("http floor: %w", err)
	}
	return rate(n, elapsed), nil
}

// redisSettings are the Redis settings to measure, none without Redis (the
// SQLite cells still run once).
func (e *env) redisSettings() []persistence {
	if e.redis == nil {
		return []persistence{{name: "no redis-server"}}
	}
	return e.opts.persistence
}

func cellOf(c cell, err error) cell {
	if err != nil {
		return failure(err)
	}
	return c
}

// withCommands resets Redis to p, runs measure, and returns its cell with
// the server's use it caused per job.
func (e *env) withCommands(ctx context.Context, p persistence, jobs int, measure func() (cell, error)) (cell, useCells) {
	if err := e.redis.reset(ctx, p); err != nil {
		return failure(err), failedUse(err)
	}
	before, err := e.redis.use(ctx)
	if err != nil {
		return failure(err), failedUse(err)
	}
	c, err := measure()
	if err != nil {
		return failure(err), failedUse(err)
	}
	return c, e.useSince(ctx, before, 0, jobs)
}

// enqueueCyber publishes n single events named name through the engine's
// intake with no worker running, as asynq's row has no server.
func (e *env) enqueueCyber(ctx context.Context, backend, name string, n int) (cell, error) {
	dir, err := e.scratch()
	if err != nil {
		return cell{}, err
	}
	c, err := openCyber(ctx, cyberOptions{backend: backend, dir: dir, redisURL: e.redisURL(), workers: workers}, noopFunction(nil))
	if err != nil {
		return cell{}, err
	}
	defer c.close()
	now := time.Now()
	elapsed, err := concurrently(n, func(i int) error { return c.publish(ctx, name, payload(i, now)) })
	if err != nil {
		return cell{}, err
	}
	e.logf("enqueue %s in-process: %d %s events in %v", backend, n, name, elapsed.Round(time.Millisecond))
	return rate(n, elapsed), nil
}

func (e *env) redisURL() string {
	if e.redis == nil {
		return ""
	}
	return e.redis.url()
}

// enqueueAsynq enqueues n tasks with Client.Enqueue and default options.
func (e *env) enqueueAsynq(ctx context.Context, n int) (cell, error) {
	client := asynq.NewClient(asynqConn(e.redis.addr))
	defer client.Close()
	now := time.Now()
	elapsed, err := concurrently(n, func(i int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(taskNoop, payload(i, now)))
		return err
	})
	if err != nil {
		return cell{}, fmt.Errorf("asynq: enqueue: %w", err)
	}
	e.logf("enqueue asynq: %d tasks in %v", n, elapsed.Round(time.Millisecond))
	return rate(n, elapsed), nil
}

// enqueueHTTP posts n single events to a real daemon on loopback. Each
// event's ts is an hour ahead, so the daemon's workers leave the runs
// queued (the store writes the same records as for a run due now): like
// the asynq row, intake runs alone.
func (e *env) enqueueHTTP(ctx context.Context, backend string, n int) (cell, error) {
	dir, err := e.scratch()
	if err != nil {
		return cell{}, err
	}
	elapsed, err := intakeHTTP(ctx, backend, dir, e.redisURL(), n)
	if err != nil {
		return cell{}, err
	}
	e.logf("enqueue %s over HTTP: %d events in %v", backend, n, elapsed.Round(time.Millisecond))
	return rate(n, elapsed), nil
}

// intakeHTTP starts the real daemon on the store in dir (or at redisURL)
// and posts n single events to it, each due in an hour, from producers
// keep-alive clients; it returns how long the posts took.
func intakeHTTP(ctx context.Context, backend, dir, redisURL string, n int) (time.Duration, error) {
	d, err := startDaemon(ctx, backend, dir, redisURL, noopFunction(nil))
	if err != nil {
		return 0, err
	}
	defer stopDaemon(d)
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * producers, MaxIdleConnsPerHost: 2 * producers}}
	defer client.CloseIdleConnections()
	url := "http://" + d.Addr() + "/e/bench-key"
	now := time.Now()
	later := strconv.FormatInt(now.Add(time.Hour).UnixMilli(), 10)
	return concurrently(n, func(i int) error {
		body := `{"name":"` + eventJob + `","ts":` + later + `,"data":` + string(payload(i, now)) + `}`
		return post(ctx, client, url, []byte(body))
	})
}

// post sends body to the event API and checks it was accepted.
func post(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http: post event: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("http: post event: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("http: post event: status %d: %s", resp.StatusCode, raw)
	}
	var out struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out.IDs) == 0 {
		return fmt.Errorf("http: post event: answer %s", raw)
	}
	return nil
}

// startDaemon starts the real daemon (daemon.New and Start) on a loopback
// port with fns as its only functions and default settings otherwise.
func startDaemon(ctx context.Context, backend, dir, redisURL string, fns ...engine.Function) (*daemon.Daemon, error) {
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.Workers = workers
	if backend == backendRedis {
		cfg.Store = redisURL
	}
	d, err := daemon.New(ctx, cfg, slog.New(slog.DiscardHandler), daemon.Options{Functions: fns})
	if err != nil {
		return nil, err
	}
	if err := d.Start(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

func stopDaemon(d *daemon.Daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.Stop(ctx)
}
