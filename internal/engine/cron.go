package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/robfig/cron/v3"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// cronParser is the grammar gocron uses with seconds optional: five fields,
// or six with seconds first, descriptors (@hourly), and a TZ= prefix.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// maxCatchUp bounds how old a missed tick may be and still fire at start.
const maxCatchUp = 24 * time.Hour

// cronSchedule is a parsed cron trigger.
type cronSchedule struct {
	spec  string // as written, for gocron and the API
	sched cron.Schedule
}

func parseCron(spec string) (sched cronSchedule, err error) {
	spec = strings.TrimSpace(spec)
	full := spec
	if !strings.HasPrefix(spec, "TZ=") && !strings.HasPrefix(spec, "CRON_TZ=") {
		full = "CRON_TZ=UTC " + spec
	} else if !strings.ContainsAny(spec, " \t") {
		// robfig/cron slices out of range on a bare "TZ=zone" (found by
		// FuzzParseCron).
		return cronSchedule{}, fmt.Errorf("cron %q: a time zone needs a schedule after it", spec)
	}
	defer func() {
		if p := recover(); p != nil {
			sched, err = cronSchedule{}, fmt.Errorf("cron %q: unparsable: %v", spec, p)
		}
	}()
	s, err := cronParser.Parse(full)
	if err != nil {
		return cronSchedule{}, fmt.Errorf("cron %q: %w", spec, err)
	}
	if s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return cronSchedule{}, fmt.Errorf("cron %q never fires", spec)
	}
	return cronSchedule{spec: full, sched: s}, nil
}

// next is the first tick strictly after t.
func (c cronSchedule) next(t time.Time) time.Time { return c.sched.Next(t) }

// prev is the latest tick at or before t within maxCatchUp.
func (c cronSchedule) prev(t time.Time) (time.Time, bool) {
	for back := time.Second; back <= 2*maxCatchUp; back *= 2 {
		tick := c.sched.Next(t.Add(-back))
		if tick.IsZero() || tick.After(t) {
			continue
		}
		for {
			n := c.sched.Next(tick)
			if n.IsZero() || n.After(t) {
				return tick, t.Sub(tick) <= maxCatchUp
			}
			tick = n
		}
	}
	return time.Time{}, false
}

// Scheduler fires cron triggers through gocron v2. A fire only creates a
// run (idempotency key cron:<function>:<unix>), so any number of daemons
// fire each tick exactly once; workers execute it. Taking a tick and
// creating its run are one store call: the fire publishes the tick's event
// under the client id cron:<function>:<unix>, and the store keeps the first
// such publication and answers every later one as a duplicate, atomically.
// No daemon can take a tick and die before its run exists.
type Scheduler struct {
	e   *Engine
	log *slog.Logger
	s   gocron.Scheduler

	// stopCatchUp ends the background catch-ups (those the store did not
	// answer at start, and those of ticks whose fire failed: retries);
	// caughtUp is done once they end.
	stopCatchUp context.CancelFunc
	caughtUp    chan struct{}
	retries     chan func(ctx context.Context, now time.Time) error
}

// catchUpCallTimeout bounds each store call of a catch-up at start, so
// that a store that does not answer (Redis down, its sentinels dead) holds
// the daemon's start for seconds, not for the client's own retries; what
// it could not do is retried in the background (catchUpLater).
const catchUpCallTimeout = 2 * time.Second

// catchUpRetry is how often the background catch-up tries again.
const catchUpRetry = 2 * time.Second

// NewScheduler returns a scheduler for e's cron functions.
func NewScheduler(e *Engine) *Scheduler {
	return &Scheduler{e: e, log: e.baseLog.With("component", "scheduler")}
}

// lastFireKey remembers a function's last fired tick, so a tick missed while
// no daemon ran can be caught up at start.
func lastFireKey(fnID string) string { return "cyberdrew:cron:last:" + fnID }

// Start fires any tick missed while down (one per function, within its
// period and at most 24 h old) and schedules every cron trigger.
func (s *Scheduler) Start(ctx context.Context) error {
	sch, err := gocron.NewScheduler(gocron.WithClock(s.e.clock), gocron.WithLocation(time.UTC),
		gocron.WithLogger(gocronLogger{s.log}))
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	s.s = sch
	s.e.mu.RLock()
	var fns []*registered
	for _, id := range s.e.order {
		if r := s.e.functions[id]; r.Disabled == "" && len(r.crons) > 0 {
			fns = append(fns, r)
		}
	}
	s.e.mu.RUnlock()
	now := s.e.clock.Now()
	var later []func(ctx context.Context, now time.Time) error // catch-ups the store did not answer
	for _, r := range fns {
		for i, c := range r.crons {
			do := func(ctx context.Context, now time.Time) error { return s.catchUp(ctx, r, c, now) }
			if len(later) > 0 {
				later = append(later, do)
			} else {
				cctx, cancel := context.WithTimeout(ctx, catchUpCallTimeout)
				if err := do(cctx, now); err != nil {
					s.log.Warn("the store did not answer: catching up missed cron ticks in the background", "function_id", r.ID, "err", err)
					later = append(later, do)
				}
				cancel()
			}
			name := r.ID
			if i > 0 {
				name = fmt.Sprintf("%s#%d", r.ID, i)
			}
			_, err := sch.NewJob(
				gocron.CronJob(c.spec, true),
				gocron.NewTask(func() { s.fire(r, c, s.e.clock.Now()) }),
				gocron.WithName(name),
			)
			if err != nil {
				return fmt.Errorf("scheduler: %s: %w", r.ID, err)
			}
		}
	}
	s.catchUpLater(later) // before the first fire, which may hand it a retry
	sch.Start()
	return nil
}

// catchUpLater runs in the background, until Stop, the catch-ups a store
// that did not answer at start left (todo), and those of ticks whose fire
// failed later (retries: a store down at that moment), again every
// catchUpRetry until each is done: the daemon serves meanwhile (its
// readiness says the store is down). A tick gocron fires meanwhile is not
// fired twice: a tick's run is published under its own client id. A
// failed tick is caught up as at a restart: while it is the latest.
func (s *Scheduler) catchUpLater(todo []func(ctx context.Context, now time.Time) error) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopCatchUp, s.caughtUp = cancel, make(chan struct{})
	s.retries = make(chan func(ctx context.Context, now time.Time) error, 64)
	go func() {
		defer close(s.caughtUp)
		for {
			var again <-chan time.Time // nil, never ready, while nothing waits
			if len(todo) > 0 {
				again = time.After(catchUpRetry) // the store's own time, not the engine's clock
			}
			select {
			case <-ctx.Done():
				return
			case f := <-s.retries:
				todo = append(todo, f)
				continue
			case <-again:
			}
			for len(todo) > 0 {
				cctx, cancelCall := context.WithTimeout(ctx, catchUpCallTimeout)
				err := todo[0](cctx, s.e.clock.Now())
				cancelCall()
				if err != nil {
					s.log.Debug("cron catch-up: the store did not answer", "err", err)
					break
				}
				todo = todo[1:]
			}
		}
	}()
}

// Stop stops firing; a fire in progress completes.
func (s *Scheduler) Stop(ctx context.Context) error {
	if s.s == nil {
		return nil
	}
	if s.stopCatchUp != nil {
		s.stopCatchUp()
		<-s.caughtUp
	}
	done := make(chan error, 1)
	go func() { done <- s.s.Shutdown() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// catchUp fires the tick of c that passed while no daemon ran, or marks a
// first start; it returns the store's error when the store did not answer
// (the catch-up is to be done again), nil otherwise.
func (s *Scheduler) catchUp(ctx context.Context, r *registered, c cronSchedule, now time.Time) error {
	raw, err := s.e.store.Get(ctx, lastFireKey(r.ID))
	if errors.Is(err, store.ErrNotFound) {
		// First start: nothing was missed yet, but from now on a tick is
		// owed, the first one too. Without this mark a daemon down
		// across the function's first tick would owe nothing on restart.
		// It is written whatever the schedule, also when its last tick
		// is further back than a catch-up reaches (a weekly or monthly
		// schedule first started days after its tick). Another daemon
		// starting meanwhile may have marked or fired it.
		_, err := s.e.store.SetNX(ctx, lastFireKey(r.ID), strconv.FormatInt(now.Unix(), 10), 0)
		return err
	}
	if err != nil {
		return err
	}
	tick, ok := c.prev(now)
	if !ok {
		return nil
	}
	last, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || tick.Unix() <= last {
		return nil
	}
	s.log.Info("firing a tick missed while down", "function_id", r.ID, "tick", tick)
	return s.fireTick(ctx, r, c, tick)
}

// fire creates the run for the tick gocron woke us for.
func (s *Scheduler) fire(r *registered, c cronSchedule, now time.Time) {
	tick, ok := c.prev(now)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	if err := s.fireTick(ctx, r, c, tick); err != nil {
		// Caught up in the background once the store answers.
		select {
		case s.retries <- func(ctx context.Context, now time.Time) error { return s.catchUp(ctx, r, c, now) }:
		default:
			s.log.Warn("cron: too many failed fires waiting; this one waits for a restart", "function_id", r.ID, "tick", tick)
		}
	}
}

// fireTick publishes the tick's run and records the tick as the last one
// fired; it returns the publication's error.
func (s *Scheduler) fireTick(ctx context.Context, r *registered, c cronSchedule, tick time.Time) error {
	key := fmt.Sprintf("cron:%s:%d", r.ID, tick.Unix())
	data, _ := json.Marshal(map[string]string{"cron": c.spec, "scheduled_at": tick.UTC().Format(time.RFC3339)})
	pub := s.e.publication(IncomingEvent{ID: key, Name: EventScheduledTimer, Data: data})
	spec := s.e.spec(r, pub.Event, false)
	spec.IdempotencyKey, spec.IdempotencyTTL = key, idempotencyTTL
	pub.Runs = []store.RunSpec{spec}
	s.e.place(&pub, -1, false)
	res, err := s.e.store.Publish(ctx, []store.Publication{pub})
	if err != nil {
		s.log.Error("cron fire failed", "function_id", r.ID, "tick", tick, "err", err)
		return err
	}
	s.e.observeSkips(res[0].Runs)
	if err := s.e.store.Set(ctx, lastFireKey(r.ID), strconv.FormatInt(tick.Unix(), 10), 0); err != nil {
		s.log.Warn("recording cron fire", "function_id", r.ID, "err", err)
	}
	return nil
}

// gocronLogger adapts slog to gocron's logger.
type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug(msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Debug(msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn(msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error(msg, args...) }
