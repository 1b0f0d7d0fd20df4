package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// childEnv, when set, makes the program a worker process of the crash and
// RSS rows instead of the harness; its value is the role.
const childEnv = "CYBERDREW_BENCH_CHILD"

// Child roles.
const (
	roleCrash = "crash" // a worker of the crash rows
	roleServe = "serve" // an idle server of the RSS rows
)

// Systems a child runs.
const (
	systemCyber = "cyberdrew"
	systemAsynq = "asynq"
)

// eventCrash starts one run of the crash function.
const eventCrash = "bench/crash.requested"

// childOptions are a child's command line.
type childOptions struct {
	system   string
	backend  string
	dir      string
	redis    string // URL for cyberdrew, host:port for asynq
	jobs     int    // jobs this child enqueues itself
	workers  int
	lease    time.Duration
	blocking bool // block in the second part of every job
}

// args is o as a child's command line.
func (o childOptions) args() []string {
	return []string{
		"-system", o.system, "-backend", o.backend, "-dir", o.dir, "-redis", o.redis,
		"-jobs", strconv.Itoa(o.jobs), "-workers", strconv.Itoa(o.workers),
		"-lease", o.lease.String(), "-blocking=" + strconv.FormatBool(o.blocking),
	}
}

// say tells the harness what happened, one line per write on stdout (an
// unbuffered pipe: a line written survives a kill -9 right after).
func say(what string, job int) { fmt.Fprintf(os.Stdout, "%s %d\n", what, job) }

// runChild runs the child role until it is signalled or killed.
func runChild(role string, args []string) int {
	var o childOptions
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	fs.StringVar(&o.system, "system", systemCyber, "")
	fs.StringVar(&o.backend, "backend", backendSQLite, "")
	fs.StringVar(&o.dir, "dir", "", "")
	fs.StringVar(&o.redis, "redis", "", "")
	fs.IntVar(&o.jobs, "jobs", 0, "")
	fs.IntVar(&o.workers, "workers", workers, "")
	fs.DurationVar(&o.lease, "lease", 0, "")
	fs.BoolVar(&o.blocking, "blocking", false, "")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case role == roleCrash && o.system == systemCyber:
		err = crashCyber(ctx, o)
	case role == roleCrash && o.system == systemAsynq:
		err = crashAsynq(ctx, o)
	case role == roleServe && o.system == systemCyber:
		err = serveCyber(ctx, o)
	case role == roleServe && o.system == systemAsynq:
		err = serveAsynq(ctx, o)
	default:
		err = fmt.Errorf("unknown child role %q for system %q", role, o.system)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return exitFail
	}
	return exitOK
}

// crashJob is the two-part job of the crash rows: part one completes (a
// side effect the harness counts), part two blocks in the worker that will
// be killed and completes in the one that takes over.
func crashJob(ctx context.Context, job int, blocking bool) error {
	if blocking {
		say("block", job)
		<-ctx.Done()
		return ctx.Err()
	}
	say("second", job)
	return nil
}

// crashFunction is crashJob as two durable steps.
func crashFunction(blocking bool) engine.Function {
	return engine.Function{
		ID:       "crash",
		Triggers: []engine.Trigger{{Event: eventCrash}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			var p parsed
			if err := json.Unmarshal(r.Event.Data, &p); err != nil {
				return nil, engine.NonRetriable(err)
			}
			if _, err := engine.Step(ctx, r, "first", func(context.Context) (int, error) { say("first", p.Job); return p.Job, nil }); err != nil {
				return nil, err
			}
			_, err := engine.Step(ctx, r, "second", func(ctx context.Context) (int, error) { return p.Job, crashJob(ctx, p.Job, blocking) })
			return nil, err
		},
	}
}

func crashCyber(ctx context.Context, o childOptions) error {
	c, err := openCyber(ctx, cyberOptions{backend: o.backend, dir: o.dir, redisURL: o.redis, workers: o.workers, lease: o.lease}, crashFunction(o.blocking))
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.start(ctx); err != nil {
		return err
	}
	now := time.Now()
	if err := c.publishMany(ctx, eventCrash, o.jobs, func(i int) []byte { return payload(i, now) }); err != nil {
		return err
	}
	say("ready", 0)
	<-ctx.Done()
	return nil
}

func crashAsynq(ctx context.Context, o childOptions) error {
	srv := newAsynqServer(o.redis, o.workers)
	err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p parsed
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return err
		}
		say("first", p.Job)
		return crashJob(ctx, p.Job, o.blocking)
	}))
	if err != nil {
		return fmt.Errorf("asynq: start: %w", err)
	}
	defer srv.Shutdown()
	client := asynq.NewClient(asynqConn(o.redis))
	defer client.Close()
	now := time.Now()
	for i := range o.jobs {
		if _, err := client.EnqueueContext(ctx, asynq.NewTask(taskCrash, payload(i, now))); err != nil {
			return fmt.Errorf("asynq: enqueue: %w", err)
		}
	}
	say("ready", 0)
	<-ctx.Done()
	return nil
}

// serveCyber is the real daemon with the no-op function, idle.
func serveCyber(ctx context.Context, o childOptions) error {
	d, err := startDaemon(ctx, o.backend, o.dir, o.redis, noopFunction(nil))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "addr %s\n", d.Addr())
	<-ctx.Done()
	return stopDaemon(d)
}

// serveAsynq is an asynq server with a no-op handler, idle.
func serveAsynq(ctx context.Context, o childOptions) error {
	srv := newAsynqServer(o.redis, o.workers)
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		return fmt.Errorf("asynq: start: %w", err)
	}
	say("ready", 0)
	<-ctx.Done()
	srv.Shutdown()
	return nil
}
