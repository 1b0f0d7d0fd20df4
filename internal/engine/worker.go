package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/jonboulle/clockwork"
)

// storeCallTimeout bounds one store call made on behalf of a run.
const storeCallTimeout = 30 * time.Second

// claimAbandonGrace is how long a stopping pool waits for a claim in
// flight before it gives the claim up (see claim).
const claimAbandonGrace = 2 * time.Second

// Causes with which a run's context is cancelled.
var (
	errShutdown      = errors.New("worker shutting down")
	errRunCancelled  = errors.New("run cancelled")
	errLeaseLost     = errors.New("lease lost")
	errFinishTimeout = errors.New("finish timeout exceeded")
)

// PoolOptions configure a WorkerPool.
type PoolOptions struct {
	Workers  int           // concurrent runs; default 16
	LeaseTTL time.Duration // default 5 s; every third of it the pool renews all its leases at once
	Owner    string        // worker id in leases; default host:pid
}

// WorkerPool claims runs from the store and executes them on a fixed set of
// worker goroutines. New runs wake it through the store's change stream;
// otherwise it sleeps until the store's next wake time, never polling.
type WorkerPool struct {
	e    *Engine
	opts PoolOptions
	log  *slog.Logger

	cancel   context.CancelFunc
	done     chan struct{}
	slotFree chan struct{}
	// jobs hands claimed runs to the workers. The claim loop is its only
	// sender and never claims more runs than there are idle workers, so a
	// send never waits; the loop closes it when it ends.
	jobs chan job

	mu sync.Mutex
	// inflight holds the executions by lease token: after its lease
	// lapsed, a run may be claimed again (by this pool too) before its
	// first execution has noticed.
	inflight map[string]inflight
	// reserved counts the idle workers promised to runs being published
	// (reserve, take); claims leave them alone.
	reserved int
	// drained is set while the pool's last claim left nothing claimable
	// behind and no change since said a run may have become claimable:
	// only then may a publication's runs start here at once, so that new
	// runs never overtake a backlog.
	drained bool
	// queued counts the runs this engine published queued, claimable now,
	// for this pool to claim (queuedLocally): a claim that began before
	// one of them was stored does not leave the pool drained.
	queued uint64
	// ending holds the runs this pool is ending (finish) whose end the
	// change feed has not announced yet: the slot their worker frees makes
	// the pool claim again already, so their announcement does not
	// (wakes). Bounded by maxEnding: past it, announcements wake as before.
	ending map[string]bool
	// closed is set once the claim loop has ended and closed jobs.
	closed bool
	base   context.Context // the runs' contexts derive from it (values only)
	wg     sync.WaitGroup

	stopRenew context.CancelFunc
	renewDone chan struct{}
}

// inflight is a run a worker executes: how to interrupt it, and its lease
// as the renewer sends it to the store (RunID and Token only).
type inflight struct {
	cancel context.CancelCauseFunc
	lease  store.Lease
	// ending is set once the worker gives the lease up (finish, suspend,
	// release): it is no longer renewed.
	ending bool
}

// NewWorkerPool returns a pool executing e's runs.
func NewWorkerPool(e *Engine, opts PoolOptions) *WorkerPool {
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 5 * time.Second
	}
	if opts.Owner == "" {
		host, _ := os.Hostname()
		opts.Owner = fmt.Sprintf("%s:%d:%s", host, os.Getpid(), e.newID(e.clock.Now())[20:])
	}
	return &WorkerPool{
		e: e, opts: opts, log: e.baseLog.With("component", "workers"),
		slotFree: make(chan struct{}, 1),
		inflight: map[string]inflight{},
		ending:   map[string]bool{},
	}
}

// job is a leased run handed to a worker, with its context.
type job struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	lease  *store.Lease
}

// Start starts the workers and begins claiming runs.
func (p *WorkerPool) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.done = make(chan struct{})
	p.jobs = make(chan job, p.opts.Workers)
	// Workers live as long as the pool: a run's store calls need a deep
	// stack, which a goroutine started per run would grow anew every time.
	for range p.opts.Workers {
		p.wg.Go(p.work)
	}
	// The renewer outlives the claim loop: runs drain after Stop begins.
	// Its ticker is armed before the first claim, so no lease is ever held
	// without a renewal due within a third of it.
	renewCtx, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
	p.stopRenew = stopRenew
	p.renewDone = make(chan struct{})
	renewEvery := p.opts.LeaseTTL / 3
	ticker := p.e.clock.NewTicker(renewEvery)
	go func() {
		defer close(p.renewDone)
		p.renewLoop(renewCtx, ticker, renewEvery)
	}()
	changes := p.e.store.Subscribe(ctx)
	p.base = ctx
	p.e.local.CompareAndSwap(nil, p)
	go func() {
		defer close(p.done)
		p.loop(ctx, changes)
		p.e.local.CompareAndSwap(p, nil)
		p.mu.Lock()
		p.closed, p.drained = true, false
		close(p.jobs)
		p.mu.Unlock()
	}()
	return nil
}

// reserve promises up to n idle workers to runs being published, when the
// pool has drained what was claimable (drained): it returns how many.
// Each is either taken by take or given back by unreserve.
func (p *WorkerPool) reserve(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.drained {
		return 0
	}
	k := min(n, p.opts.Workers-len(p.inflight)-p.reserved)
	if k <= 0 {
		return 0
	}
	p.reserved += k
	return k
}

// unreserve gives back n reserved workers that no lease came for.
func (p *WorkerPool) unreserve(n int) {
	p.mu.Lock()
	p.reserved -= n
	p.mu.Unlock()
	p.signalSlot()
}

// take hands a run the store leased to this pool at its publication to
// a reserved worker, or, once the pool has stopped, hands it back.
func (p *WorkerPool) take(l *store.Lease) {
	p.mu.Lock()
	p.reserved--
	if p.closed {
		p.mu.Unlock()
		p.release(p.log.With("run_id", l.RunID), l)
		return
	}
	runCtx, cancel := context.WithCancelCause(context.WithoutCancel(p.base))
	p.inflight[l.Token] = inflight{cancel: cancel, lease: store.Lease{RunID: l.RunID, Token: l.Token}}
	// The send never waits: jobs holds as many as there are workers, and
	// the runs in flight never outnumber them (reserve).
	p.jobs <- job{ctx: runCtx, cancel: cancel, lease: l}
	p.mu.Unlock()
}

// signalSlot wakes the claim loop: a worker may be free.
func (p *WorkerPool) signalSlot() {
	select {
	case p.slotFree <- struct{}{}:
	default:
	}
}

// handBackGrace is how long runs interrupted at Stop's deadline get to
// hand their runs back (one store call each) before Stop gives up on them.
// Like ctx's deadline, it is wall-clock time.
const handBackGrace = time.Second

// Stop stops claiming, lets in-flight runs finish until ctx is done, then
// interrupts the rest, which hand their runs back at once. It returns
// within handBackGrace of ctx's end whatever the handlers do: a run still
// executing then (a handler that ignores its context) is logged and
// reported in the error, and its lease lapses for another worker to take
// it over.
func (p *WorkerPool) Stop(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	defer func() {
		p.stopRenew()
		<-p.renewDone // one renewal at most, bounded by a third of the lease
	}()
	// The workers end once the claim loop has closed their queue and each
	// has finished its run.
	finished := make(chan struct{})
	go func() { <-p.done; p.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	ids := p.runIDs()
	for _, run := range p.inflight {
		run.cancel(errShutdown)
	}
	p.mu.Unlock()
	if len(ids) > 0 {
		p.log.Warn("shutdown timeout: interrupting runs in flight; they are handed back", "runs", ids)
	}
	grace, cancel := context.WithTimeout(context.Background(), handBackGrace)
	defer cancel()
	select {
	case <-finished:
		return nil
	case <-grace.Done():
	}
	p.mu.Lock()
	ids = p.runIDs()
	p.mu.Unlock()
	if len(ids) == 0 {
		p.log.Error("shutdown timeout: the claim loop has not ended (a store call hangs)")
		return errors.New("engine: stop: the claim loop did not end in time")
	}
	p.log.Error("runs still in flight after the shutdown timeout; their leases lapse and another worker takes them over", "runs", ids)
	return fmt.Errorf("engine: stop: %d runs still in flight: %s", len(ids), strings.Join(ids, ", "))
}

// runIDs lists the runs in flight, sorted; p.mu is held.
func (p *WorkerPool) runIDs() []string {
	ids := make([]string, 0, len(p.inflight))
	for _, run := range p.inflight {
		ids = append(ids, run.lease.RunID)
	}
	slices.Sort(ids)
	return ids
}

// Done is closed once the pool has stopped claiming runs: after Stop
// begins, or when its change subscription ends (the store was closed).
func (p *WorkerPool) Done() <-chan struct{} { return p.done }

// Busy returns how many runs the pool is executing.
func (p *WorkerPool) Busy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight)
}

// occupied counts the workers running a run or reserved for one.
func (p *WorkerPool) occupied() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight) + p.reserved
}

// undrain records that a run may have become claimable since the last
// claim (claimedAll records what a claim left).
func (p *WorkerPool) undrain() {
	p.mu.Lock()
	p.drained = false
	p.mu.Unlock()
}

// maxEnding bounds WorkerPool.ending: announcements that never came (a
// lagged feed) must not grow it.
const maxEnding = 1024

// expectEnd records (or, after a failed finish, forgets) that this pool is
// ending run id: its announcement is not a reason to claim (wakes).
func (p *WorkerPool) expectEnd(id string, ending bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !ending:
		delete(p.ending, id)
	case len(p.ending) < maxEnding:
		p.ending[id] = true
	}
}

// endedHere reports whether the run whose end c announces was ended by
// this pool, and stops expecting it.
func (p *WorkerPool) endedHere(c store.Change) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ending[c.RunID] {
		return false
	}
	delete(p.ending, c.RunID)
	return true
}

// queuedCount is how many runs this engine has published queued
// (queuedLocally) so far.
func (p *WorkerPool) queuedCount() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queued
}

// claimedAll records a claim that began when queuedCount was before: it
// left nothing claimable when it found fewer runs than it asked for and
// no run was published queued meanwhile.
func (p *WorkerPool) claimedAll(all bool, before uint64) {
	p.mu.Lock()
	p.drained = all && p.queued == before && !p.closed
	p.mu.Unlock()
}

// queuedLocally tells the pool that its engine has just stored runs that
// are claimable now and that no worker took at their publication: the
// pool is not drained, and claims again. The change feed says the same
// later (and is all a pool hears of another daemon's runs); a publication
// made meanwhile must not be leased here ahead of them.
func (p *WorkerPool) queuedLocally() {
	p.mu.Lock()
	p.queued++
	p.drained = false
	p.mu.Unlock()
	p.signalSlot()
}

// Size returns the pool's capacity.
func (p *WorkerPool) Size() int { return p.opts.Workers }

func (p *WorkerPool) loop(ctx context.Context, changes <-chan store.Change) {
	failures := 0
	for {
		if p.occupied() >= p.opts.Workers {
			// Nothing can be claimed before a run ends, which frees a
			// slot: no store call until then, whatever changes.
			if !p.sleep(ctx, changes, time.Time{}, true) {
				return
			}
			continue
		}
		claimedAt := p.e.clock.Now()
		before := p.queuedCount()
		claimed, err := p.claim(ctx)
		if ctx.Err() != nil {
			return
		}
		p.claimedAll(err == nil && !claimed, before)
		var wake time.Time // zero: wait for a change only
		switch {
		case err != nil:
			failures++
			backoff := min(time.Duration(failures)*250*time.Millisecond, 5*time.Second)
			p.log.Warn("claim failed; backing off", "err", err, "retry_in", backoff)
			wake = p.e.clock.Now().Add(backoff)
		case claimed:
			failures = 0
			continue
		default:
			failures = 0
			at, ok, err := p.e.store.NextWake(ctx)
			switch {
			case err != nil:
				wake = p.e.clock.Now().Add(time.Second)
			case !ok:
			case at.After(p.e.clock.Now()):
				wake = at
			case at.After(claimedAt):
				continue // the clock passed at while we claimed: look again
			default:
				// Claimable but not claimed: blocked by a concurrency limit
				// or a full pool. A finishing run wakes us; look again after
				// a lease period in any case.
				wake = p.e.clock.Now().Add(p.opts.LeaseTTL)
			}
		}
		if !p.sleep(ctx, changes, wake, false) {
			return
		}
	}
}

// sleep waits until wake (if set), a free slot, or (unless full) a change
// that may make a run claimable; false means stop.
func (p *WorkerPool) sleep(ctx context.Context, changes <-chan store.Change, wake time.Time, full bool) bool {
	var timer <-chan time.Time
	if !wake.IsZero() {
		d := wake.Sub(p.e.clock.Now())
		if d <= 0 {
			return true
		}
		t := p.e.clock.NewTimer(d)
		defer t.Stop()
		// The clock may have moved between reading it and arming the timer.
		if !p.e.clock.Now().Before(wake) {
			return true
		}
		timer = t.Chan()
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer:
			return true
		case <-p.slotFree:
			return true
		case c, ok := <-changes:
			if !ok {
				return false
			}
			if p.wakes(c, wake) {
				// A run may be claimable: new ones wait for the claim.
				p.undrain()
				if !full {
					return true
				}
			}
		}
	}
}

// wakes reports whether a change may have made a run claimable, or will
// make one claimable before wake (zero: no wake planned), and cancels a
// local run that was cancelled elsewhere.
func (p *WorkerPool) wakes(c store.Change, wake time.Time) bool {
	switch c.Kind {
	case "":
		return true // lagged: re-read
	case store.ChangeRun:
		if c.Status == store.StatusCancelled {
			p.mu.Lock()
			for _, run := range p.inflight {
				if run.lease.RunID == c.RunID {
					run.cancel(errRunCancelled)
				}
			}
			p.mu.Unlock()
			return false
		}
		if c.Status.Finished() {
			// May free a concurrency slot; the end of a run of this
			// pool's freed a worker, which claimed again already.
			return !p.endedHere(c)
		}
		if c.AvailableAt.IsZero() {
			return false
		}
		// Claimable now, or sooner than the pool meant to look again (a
		// delayed or debounced run, a sleep suspended elsewhere): look
		// again now, which re-reads the next wake.
		return !c.AvailableAt.After(p.e.clock.Now()) || wake.IsZero() || c.AvailableAt.Before(wake)
	}
	return false
}

// claim leases as many runs as there are free slots and starts them; it
// reports whether it filled every free slot (so there may be more). Once
// ctx ends (Stop) it claims nothing more.
//
// The store call itself does not end with ctx: a claim that was sent may
// be applied even when its caller stops waiting (the Redis store's
// pipeline goes on without it), and the runs it leased would then be held
// by this pool, with no worker on them, until their leases lapse. So the
// claim is seen through, and the runs it got after Stop began are handed
// back at once.
func (p *WorkerPool) claim(ctx context.Context) (bool, error) {
	p.mu.Lock()
	free := p.opts.Workers - len(p.inflight) - p.reserved
	p.mu.Unlock()
	if ctx.Err() != nil {
		return false, nil
	}
	if free <= 0 {
		return true, nil // every free worker is taken (by a reservation): look again once one frees
	}
	n := min(free, 32)
	// A claim in flight is seen through when the pool stops (the store
	// may be granting leases), but only for claimAbandonGrace: a store
	// that does not answer must not hold the daemon's stop for the whole
	// call timeout. A lease granted after that lapses, and its run is
	// taken over then.
	claimCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
	stopping := context.AfterFunc(ctx, func() { time.AfterFunc(claimAbandonGrace, cancel) })
	leases, err := p.e.store.Claim(claimCtx, p.opts.Owner, n, p.opts.LeaseTTL)
	stopping()
	cancel()
	if err != nil {
		p.e.observe.StoreError("claim")
		return false, fmt.Errorf("engine: claim: %w", err)
	}
	for i := range leases {
		if ctx.Err() != nil {
			p.release(p.log.With("run_id", leases[i].RunID), &leases[i])
			continue
		}
		if leases[i].TakenOver {
			p.e.observe.LeaseTakenOver()
		}
		p.execute(ctx, &leases[i])
	}
	return len(leases) == n, nil
}

// execute hands one leased run to an idle worker.
func (p *WorkerPool) execute(ctx context.Context, l *store.Lease) {
	runCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	p.mu.Lock()
	p.inflight[l.Token] = inflight{cancel: cancel, lease: store.Lease{RunID: l.RunID, Token: l.Token}}
	p.mu.Unlock()
	p.jobs <- job{ctx: runCtx, cancel: cancel, lease: l}
}

// work executes the runs handed to one worker until the pool stops.
func (p *WorkerPool) work() {
	for j := range p.jobs {
		p.run(j.ctx, j.cancel, j.lease)
		p.mu.Lock()
		delete(p.inflight, j.lease.Token)
		p.mu.Unlock()
		j.cancel(nil)
		p.signalSlot()
	}
}

// run executes a leased run (the pool's renewer keeps its lease) and
// records the outcome.
func (p *WorkerPool) run(ctx context.Context, cancel context.CancelCauseFunc, l *store.Lease) {
	e := p.e
	log := p.log.With("run_id", l.RunID, "function_id", l.Run.FunctionID)
	fn, ok := e.function(l.Run.FunctionID)
	if !ok {
		p.finish(log, l, store.Outcome{Status: store.StatusFailed, Error: "function " + l.Run.FunctionID + " is not registered"})
		return
	}
	if fb := l.Run.FinishBy; !fb.IsZero() {
		if !e.clock.Now().Before(fb) {
			p.finish(log, l, store.Outcome{Status: store.StatusCancelled, Error: errFinishTimeout.Error()})
			return
		}
		t := e.clock.AfterFunc(fb.Sub(e.clock.Now()), func() { cancel(errFinishTimeout) })
		defer t.Stop()
	}
	ev := l.Event
	if ev.ID != l.Run.EventID {
		var err error
		if ev, err = e.loadEvent(l.Run.EventID); err != nil {
			log.Warn("loading trigger event; handing the run back", "err", err)
			p.release(log, l)
			return
		}
	}
	if l.Run.Attempt == 0 && len(l.Steps) == 0 {
		lag := e.clock.Now().Sub(l.Run.CreatedAt)
		e.pulse.started(lag)
		e.observe.RunStarted(fn.ID, lag)
	}
	r := newRun(e, fn, l, ev)
	for !p.execute1(ctx, log, r) {
		r = r.again()
	}
}

// execute1 executes the handler once and records the outcome; it returns
// false when the run's deferred steps conflicted (errReplay): nothing of
// them was applied, and the run must be executed again.
func (p *WorkerPool) execute1(ctx context.Context, log *slog.Logger, r *Run) bool {
	e, fn, l := p.e, r.fn, r.lease
	out, herr := callHandler(ctx, fn.Handler, r)
	if step := r.close(); step != "" {
		herr = NonRetriable(fmt.Errorf("engine: the handler returned while step %q was in flight: %w", step, ErrConcurrentStep))
	}

	if r.stop == nil {
		if cause := context.Cause(ctx); cause != nil {
			r.stop = cause
		}
	}
	switch {
	case r.stop != nil && errors.Is(r.stop, errReplay):
		return false
	case r.stop != nil && errors.Is(r.stop, errFinishTimeout):
		p.finish(log, l, store.Outcome{Status: store.StatusCancelled, Error: errFinishTimeout.Error()})
	case r.stop != nil && errors.Is(r.stop, errShutdown):
		p.release(log, l)
	case r.stop != nil:
		p.interrupted(log, l, r.stop)
	case r.yield != nil:
		p.suspend(log, r)
	case herr == nil:
		data, err := json.Marshal(out)
		if err != nil {
			return p.finishRun(log, r, failed(r, fmt.Errorf("encoding output: %w", err)))
		}
		return p.finishRun(log, r, store.Outcome{Status: store.StatusCompleted, Output: data})
	default:
		var se *StepError
		if errors.As(herr, &se) || IsNonRetriable(herr) || r.Attempt >= fn.retries() {
			return p.finishRun(log, r, failed(r, herr))
		}
		// The steps that completed before the failure are kept.
		err := r.flush()
		if errors.Is(err, errReplay) {
			return false
		} else if err != nil {
			p.interrupted(log, l, err)
			return true
		}
		r.Attempt++
		at := e.retryAt(fn, r.Attempt, herr, e.clock.Now())
		if fb := l.Run.FinishBy; !fb.IsZero() && fb.Before(at) {
			at = fb
		}
		log.Info("run failed; retrying", "err", herr, "attempt", r.Attempt, "at", at)
		r.yield = &store.Suspension{Status: store.StatusRunning, AvailableAt: at, Attempt: r.Attempt}
		p.suspend(log, r)
	}
	return true
}

// interrupted ends an execution a store call stopped (err). The lease is
// kept until it lapses (the store may be unreachable), except when an
// earlier execution whose lease lapsed had applied a step's effects
// (store.ErrSuperseded): the store recorded the step as that one made it,
// and the run is handed back to execute again from its recorded steps at
// once.
func (p *WorkerPool) interrupted(log *slog.Logger, l *store.Lease, err error) {
	if errors.Is(err, store.ErrSuperseded) {
		log.Info("run's step committed by an earlier execution; handing the run back", "reason", err)
		p.release(log, l)
		return
	}
	log.Info("run interrupted", "reason", err)
}

// finishRun ends the run with o and its deferred steps. It returns false,
// having changed nothing, when their commit was refused in a way that
// makes the run execute again (Run.replayAfter).
func (p *WorkerPool) finishRun(log *slog.Logger, r *Run, o store.Outcome) bool {
	r.mu.Lock()
	o.Steps = r.pending
	r.mu.Unlock()
	err := p.finish(log, r.lease, o)
	switch {
	case len(o.Steps) > 0 && r.replayAfter(err):
		p.resumeRenewal(r.lease)
		return false
	case errors.Is(err, store.ErrSuperseded):
		p.release(log, r.lease) // as interrupted does
	}
	return true
}

// failed is the outcome of a failed run, with its cyberdrew/function.failed
// event (deduplicated per run).
func failed(r *Run, err error) store.Outcome {
	data, _ := json.Marshal(map[string]any{
		"function_id": r.FunctionID,
		"run_id":      r.ID,
		"error":       err.Error(),
		"event":       r.Event,
	})
	in := IncomingEvent{ID: "failed:" + r.ID, Name: EventFunctionFailed, Data: data}
	if r.e.partitions > 1 {
		in.InternalID = derivedID(r.ID, "", 0)
	}
	pub := r.e.publication(in)
	return store.Outcome{Status: store.StatusFailed, Error: err.Error(), Emit: []store.Publication{pub}}
}

func callHandler(ctx context.Context, h Handler, r *Run) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h(ctx, r)
}

// renewLoop renews the leases of every run the pool executes, all in one
// store call at every tick of t (a third of the lease), until ctx ends; a
// lost lease interrupts its run. A run that ends within a third of the
// lease is never renewed.
func (p *WorkerPool) renewLoop(ctx context.Context, t clockwork.Ticker, every time.Duration) {
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			p.renewAll(every)
		}
	}
}

// renewAll renews every lease held now, within timeout.
func (p *WorkerPool) renewAll(timeout time.Duration) {
	p.mu.Lock()
	leases := make([]*store.Lease, 0, len(p.inflight))
	for _, run := range p.inflight {
		if !run.ending {
			l := run.lease
			leases = append(leases, &l)
		}
	}
	p.mu.Unlock()
	if len(leases) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs, err := p.e.store.RenewLeases(ctx, leases, p.opts.LeaseTTL)
	if err != nil {
		p.e.observe.StoreError("renew lease")
		p.log.Warn("renewing leases", "runs", len(leases), "err", err)
		return
	}
	for i, err := range errs {
		switch {
		case errors.Is(err, store.ErrLeaseLost):
			p.mu.Lock()
			run, ok := p.inflight[leases[i].Token]
			// A run that is giving its lease up meanwhile lost nothing; a
			// lost lease is reported once and not renewed again.
			lost := ok && !run.ending
			if lost {
				run.ending = true
				p.inflight[leases[i].Token] = run
			}
			p.mu.Unlock()
			if lost {
				p.e.observe.LeaseLost()
				run.cancel(errLeaseLost)
			}
		case err != nil:
			p.e.observe.StoreError("renew lease")
			p.log.Warn("renewing lease", "run_id", leases[i].RunID, "err", err)
		}
	}
}

// endRenewal stops renewing a lease: its worker is about to give it up
// (finish, suspend or release), after which a renewal would find it gone.
func (p *WorkerPool) endRenewal(l *store.Lease) { p.renewing(l, false) }

// resumeRenewal renews the run's lease again after endRenewal, when the
// run goes on after all.
func (p *WorkerPool) resumeRenewal(l *store.Lease) { p.renewing(l, true) }

func (p *WorkerPool) renewing(l *store.Lease, renew bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if run, ok := p.inflight[l.Token]; ok {
		run.ending = !renew
		p.inflight[l.Token] = run
	}
}

func (p *WorkerPool) suspend(log *slog.Logger, r *Run) {
	p.endRenewal(r.lease)
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	if err := p.e.store.Suspend(ctx, r.lease, *r.yield); err != nil {
		p.e.observe.StoreError("suspend")
		log.Warn("suspending run", "err", err)
	}
}

// cancelled reports whether run id is stored as Cancelled (a lease lost to
// a cancel).
func (p *WorkerPool) cancelled(ctx context.Context, id string) bool {
	run, err := p.e.store.GetRun(ctx, id)
	return err == nil && run.Status == store.StatusCancelled
}

// finish ends the run with o; it returns the store's error, which it
// logged unless o's steps made it a conflict or a cancel took its lease.
func (p *WorkerPool) finish(log *slog.Logger, l *store.Lease, o store.Outcome) error {
	p.endRenewal(l)
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	p.expectEnd(l.RunID, true)
	err := p.e.store.Finish(ctx, l, o)
	if err != nil {
		p.expectEnd(l.RunID, false)
		switch {
		case len(o.Steps) > 0 && errors.Is(err, store.ErrConflict):
		case errors.Is(err, store.ErrSuperseded):
			log.Info("run's steps committed by an earlier execution; handing the run back", "status", o.Status)
		case errors.Is(err, store.ErrLeaseLost) && p.cancelled(ctx, l.Run.ID):
			// Cancelled while its handler was returning, before the
			// change reached this worker: what a cancel does, not a
			// store's failure.
			log.Info("run cancelled as it finished", "status", o.Status)
		default:
			p.e.observe.StoreError("finish")
			log.Warn("finishing run", "status", o.Status, "err", err)
		}
		return err
	}
	p.e.pulse.finish(o.Status, p.e.clock.Now())
	p.e.observe.RunFinished(l.Run.FunctionID, string(o.Status))
	if o.Status == store.StatusFailed {
		log.Warn("run failed", "err", o.Error)
	}
	return nil
}

func (p *WorkerPool) release(log *slog.Logger, l *store.Lease) {
	p.endRenewal(l)
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	if err := p.e.store.Release(ctx, l); err != nil {
		p.e.observe.StoreError("release")
		log.Warn("releasing run", "err", err)
	}
}

func (e *Engine) loadEvent(id string) (store.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	return e.store.GetEvent(ctx, id)
}
