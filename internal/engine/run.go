package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/keypath"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// Run is the handle a Handler receives: the run being executed, its trigger
// event, and the step tools. Step tools return the recorded result of a step
// that already completed, and otherwise execute and record it.
//
// A run takes one step at a time. Step ids follow the order of the calls
// (name, name:1, …), so steps taken at once from several goroutines could
// not find their recorded results again on the next execution: a step tool
// called while another step is in flight takes no step and returns a
// non-retriable error wrapping ErrConcurrentStep. Step tools may be called
// from any goroutine one after another, but not after the handler returned.
type Run struct {
	ID         string
	FunctionID string
	Event      store.Event
	Attempt    int // function-level attempt, 0-based

	e     *Engine
	fn    *registered
	lease *store.Lease

	// mu guards inFlight, done, seen, yield and stop, and serialises the
	// store calls that record steps.
	mu       sync.Mutex
	inFlight string         // the id of the step being taken; "" between steps
	done     bool           // the handler returned: no step is taken or recorded any more
	seen     map[string]int // how often each name was used in this execution
	// yield is set once a step suspended the run; stop is set when the run
	// must stop recording (lease lost, cancelled, shutdown).
	yield *store.Suspension
	stop  error

	// steps are the recorded steps by id, written under mu and read by the
	// step in flight.
	steps map[string]store.Step

	// pending are the completed StepStore steps not committed yet, in
	// order: they commit with the run's next durable write (flushLocked).
	// pendingWrites says how they wrote each key. Guarded by mu.
	pending       []store.StepCommit
	pendingWrites store.BatchWrites
	// replays counts the executions that ended in errReplay; past
	// maxReplays StepStore commits each step at once, as StepTx does.
	// oneByOne is set when the store refused a batch of deferred steps as
	// invalid (a blind write it cannot apply): the next execution commits
	// each step at once, so the step at fault fails on its own.
	replays  int
	oneByOne bool
}

// maxReplays bounds how often one run executes again because its
// deferred steps conflicted; then its steps commit one by one, taking
// turns on hot keys (see hotKeys).
const maxReplays = 3

func newRun(e *Engine, fn *registered, l *store.Lease, ev store.Event) *Run {
	r := &Run{
		ID: l.RunID, FunctionID: fn.ID, Event: ev, Attempt: l.Run.Attempt,
		e: e, fn: fn, lease: l,
		steps:         make(map[string]store.Step, len(l.Steps)),
		seen:          map[string]int{},
		pendingWrites: store.BatchWrites{},
	}
	for _, s := range l.Steps {
		r.steps[s.ID] = s
	}
	return r
}

// Logger returns a logger carrying the run's identity.
func (r *Run) Logger() *slog.Logger {
	return r.e.log.With("run_id", r.ID, "function_id", r.FunctionID)
}

// begin starts the step name: it returns the step's id ("name", then
// "name:1", "name:2"…) and the function that ends the step, or an error when
// the run may not take another step now.
func (r *Run) begin(name string) (id string, end func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.inFlight != "":
		return "", nil, NonRetriable(fmt.Errorf("engine: step %q called while step %q is in flight: %w", name, r.inFlight, ErrConcurrentStep))
	case r.done:
		return "", nil, fmt.Errorf("%w: step %q called after the handler returned", errInterrupted, name)
	case r.stop != nil:
		return "", nil, r.stop
	case r.yield != nil:
		return "", nil, errYield
	case name == "":
		return "", nil, NonRetriable(errors.New("engine: a step needs a name"))
	}
	n := r.seen[name]
	r.seen[name] = n + 1
	id = name
	if n > 0 {
		id = name + ":" + strconv.Itoa(n)
	}
	r.inFlight = id
	return id, r.end, nil
}

// end ends the step in flight.
func (r *Run) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight = ""
}

// close marks the handler as returned, so that no step is taken or recorded
// any more, and returns the id of a step still in flight ("" when none).
func (r *Run) close() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	return r.inFlight
}

// errClosed is what recording a step returns once the handler returned.
func errClosed(step string) error {
	return fmt.Errorf("%w: step %q ended after the handler returned", errInterrupted, step)
}

// now is the engine clock's time.
func (r *Run) now() time.Time { return r.e.clock.Now() }

// again is a fresh execution of the run after one that ended in
// errReplay: the steps committed so far are memoized, the deferred ones
// are gone.
func (r *Run) again() *Run {
	n := newRun(r.e, r.fn, r.lease, r.Event)
	n.Attempt = r.Attempt
	n.steps = r.steps
	n.replays = r.replays + 1
	if r.oneByOne {
		n.replays = max(n.replays, maxReplays)
	}
	return n
}

// replayAfter reports whether a refused commit of the deferred steps
// (with the finish, when it carried them) means executing the run again:
// a conflict, or a batch the store found invalid, which the next
// execution commits step by step.
func (r *Run) replayAfter(err error) bool {
	switch {
	case errors.Is(err, store.ErrConflict):
		r.e.observe.StepConflict(r.FunctionID)
		return true
	case errors.Is(err, store.ErrInvalid):
		r.oneByOne = true
		return true
	}
	return false
}

// save records a step (and publishes emit with it), with the deferred
// steps before it.
func (r *Run) save(s store.Step, emit []store.Publication) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return errClosed(s.ID)
	}
	if r.stop != nil {
		return r.stop
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	var err error
	if len(r.pending) > 0 {
		err = r.commitPendingLocked(ctx, store.StepCommit{Step: s, Emit: emit})
	} else {
		err = r.e.store.SaveStep(ctx, r.lease, s, emit)
	}
	if err != nil {
		return r.failedCommitLocked(fmt.Errorf("engine: save step %q: %w", s.ID, err))
	}
	r.steps[s.ID] = s
	return nil
}

// commitPendingLocked commits the deferred steps, and more after them,
// in one store write; once it succeeded they are recorded steps. mu is
// held.
func (r *Run) commitPendingLocked(ctx context.Context, more ...store.StepCommit) error {
	batch := append(slices.Clip(r.pending), more...)
	if err := r.e.store.CommitSteps(ctx, r.lease, batch); err != nil {
		return err
	}
	r.committedLocked()
	return nil
}

// committedLocked makes the deferred steps recorded steps once their
// commit succeeded. mu is held.
func (r *Run) committedLocked() {
	for _, sc := range r.pending {
		r.steps[sc.Step.ID] = sc.Step
	}
	r.pending = nil
	clear(r.pendingWrites)
}

// failedCommitLocked stops the run after a commit that failed: a
// conflict of its deferred steps, or a batch of them the store found
// invalid, makes the worker execute it again (errReplay, replayAfter); any
// other failure interrupts it. mu is held.
func (r *Run) failedCommitLocked(err error) error {
	if len(r.pending) > 0 && r.replayAfter(err) {
		r.pending = nil
		clear(r.pendingWrites)
		err = fmt.Errorf("%w: %w", errReplay, err)
		if r.stop == nil {
			r.stop = err
		}
		return err
	}
	return r.interruptLocked(err)
}

// flush commits the deferred steps, if any: before a step whose body may
// act outside the store, and before a deferred step reads a key they
// wrote.
func (r *Run) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flushLocked()
}

func (r *Run) flushLocked() error {
	if r.stop != nil {
		return r.stop
	}
	if len(r.pending) == 0 {
		return nil
	}
	return r.commitDeferredLocked(func(ctx context.Context) error { return r.commitPendingLocked(ctx) })
}

// commitDeferredLocked runs commit, which commits the deferred steps, on
// a context of its own (the step's may end first), and stops the run
// when it fails. mu is held.
func (r *Run) commitDeferredLocked(commit func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	if err := commit(ctx); err != nil {
		return r.failedCommitLocked(fmt.Errorf("engine: commit deferred steps: %w", err))
	}
	return nil
}

// deferStep adds a completed StepStore step to the deferred ones, first
// committing those its writes may not follow in one batch
// (store.BatchWrites.BlindClash).
func (r *Run) deferStep(s store.Step, fx store.Effects) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return errClosed(s.ID)
	}
	if _, clash := r.pendingWrites.BlindClash(fx); clash {
		if err := r.flushLocked(); err != nil {
			return err
		}
	}
	if r.stop != nil {
		return r.stop
	}
	r.pendingWrites.Add(fx)
	r.pending = append(r.pending, store.StepCommit{Step: s, Effects: fx})
	return nil
}

// flushBeforeRead commits the deferred steps when one of them wrote key
// (or, for a prefix, a key starting with it): a read must see their
// writes, and a batch may not hold a read of a key it wrote.
func (r *Run) flushBeforeRead(key string, prefix bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	hit := false
	if prefix {
		for k := range r.pendingWrites {
			if strings.HasPrefix(k, key) {
				hit = true
				break
			}
		}
	} else {
		_, hit = r.pendingWrites[key]
	}
	if !hit {
		return nil
	}
	return r.flushLocked()
}

// pendingKV is the store a deferred step's tx reads through: a read of a
// key the run's deferred steps wrote commits them first.
type pendingKV struct {
	store.KV
	r *Run
}

func (p pendingKV) Get(ctx context.Context, key string) (string, error) {
	if v, err, done := p.r.flushAndGet(key); done {
		return v, err
	}
	if err := p.r.flushBeforeRead(key, false); err != nil {
		return "", err
	}
	return p.KV.Get(ctx, key)
}

// flushAndGet reads key after committing the deferred steps when they
// wrote it and the store can send the two together (store.CommitReader):
// one round trip instead of two. done is false when it did nothing and
// the read is still to make.
func (r *Run) flushAndGet(key string) (v string, err error, done bool) {
	cr, ok := r.e.store.(store.CommitReader)
	if !ok {
		return "", nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, hit := r.pendingWrites[key]; !hit || r.stop != nil || len(r.pending) == 0 {
		return "", nil, false
	}
	var readErr error
	err = r.commitDeferredLocked(func(ctx context.Context) error {
		var err error
		if v, readErr, err = cr.CommitStepsGet(ctx, r.lease, r.pending, key); err != nil {
			return err
		}
		r.committedLocked()
		return nil
	})
	if err != nil {
		return "", err, true
	}
	return v, readErr, true
}

func (p pendingKV) SetCard(ctx context.Context, key string) (int64, error) {
	if err := p.r.flushBeforeRead(key, false); err != nil {
		return 0, err
	}
	return p.KV.SetCard(ctx, key)
}

func (p pendingKV) SetHas(ctx context.Context, key string, members ...string) ([]bool, error) {
	if err := p.r.flushBeforeRead(key, false); err != nil {
		return nil, err
	}
	return p.KV.SetHas(ctx, key, members...)
}

func (p pendingKV) SetMembers(ctx context.Context, key string) ([]string, error) {
	if err := p.r.flushBeforeRead(key, false); err != nil {
		return nil, err
	}
	return p.KV.SetMembers(ctx, key)
}

func (p pendingKV) TTL(ctx context.Context, key string) (time.Duration, error) {
	if err := p.r.flushBeforeRead(key, false); err != nil {
		return 0, err
	}
	return p.KV.TTL(ctx, key)
}

func (p pendingKV) Scan(ctx context.Context, prefix, cursor string, count int) ([]string, string, error) {
	if err := p.r.flushBeforeRead(prefix, true); err != nil {
		return nil, "", err
	}
	return p.KV.Scan(ctx, prefix, cursor, count)
}

// commit records a completed transactional step with its effects. A
// conflict is returned as it is (the caller runs the body again), a write
// the store refused as a non-retriable error (the step fails); any other
// failure interrupts the run as save does.
func (r *Run) commit(s store.Step, fx store.Effects) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return errClosed(s.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	err := r.e.store.CommitStep(ctx, r.lease, s, nil, fx)
	switch {
	case errors.Is(err, store.ErrConflict):
		return err
	case errors.Is(err, store.ErrInvalid):
		// A write the store refused (a blind increment of a set, say):
		// the body's fault, not the run's.
		return NonRetriable(fmt.Errorf("engine: commit step %q: %w", s.ID, err))
	case err != nil:
		return r.interruptLocked(fmt.Errorf("engine: commit step %q: %w", s.ID, err))
	}
	r.steps[s.ID] = s
	return nil
}

// suspend records s and hands the run back until at once the handler
// returns. An event matching a wait that arrives in between is not lost:
// the store wakes the run when it is suspended.
func (r *Run) suspend(s store.Step, status store.Status, at time.Time) error {
	if err := r.save(s, nil); err != nil {
		return err
	}
	if fb := r.lease.Run.FinishBy; !fb.IsZero() && fb.Before(at) {
		at = fb
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return errClosed(s.ID)
	}
	r.yield = &store.Suspension{Status: status, AvailableAt: at, Attempt: r.Attempt}
	return errYield
}

// stopped is the error that stopped the run, nil while it may go on.
func (r *Run) stopped() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stop
}

// interrupt stops the run from taking further steps.
func (r *Run) interrupt(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.interruptLocked(err)
}

// interruptLocked is interrupt with mu held. Once the handler returned, the
// worker owns stop.
func (r *Run) interruptLocked(err error) error {
	if r.done {
		return fmt.Errorf("%w: %w", errInterrupted, err)
	}
	if r.stop == nil {
		r.stop = fmt.Errorf("%w: %w", errInterrupted, err)
	}
	return r.stop
}

// Step runs fn as the step name of run r and records its result, or returns
// the result recorded by an earlier execution without calling fn. A failing
// fn is retried with the function's backoff (the run is suspended until the
// next attempt and Step returns an error the handler must return); once its
// retries are exhausted, or when fn returns a NonRetriable error, Step returns
// a *StepError.
//
// Step is for work outside the store (an email, an HTTP call): it may run
// more than once when a worker dies before the result is recorded. A step
// whose effects are writes to the store's KV data is a StepTx.
func Step[T any](ctx context.Context, r *Run, name string, fn func(ctx context.Context) (T, error)) (T, error) {
	return takeStep(ctx, r, name, func(ctx context.Context, _ *store.Tx) (T, error) { return fn(ctx) }, stepPlain)
}

// StepTx is Step for a body whose effects are KV reads and writes: tx (a
// store.KV, plus blind writes) reads the store and buffers the writes,
// which are committed with the step's record in one atomic write. A crash before the commit leaves neither, a
// crash after leaves both, and a replay applies nothing: the effects happen
// exactly once. A body that returns an error applies nothing. When a key
// the body read changed before the commit (another run wrote it), the body
// runs again at once with a fresh view, up to maxConflicts times, without
// counting as a retry (see hotKeys). The tx handle is valid only inside the body.
//
// A body that also acts outside the store (sends an email, say) is a
// StepTx; a body whose only effects are through tx is better a StepStore.
func StepTx[T any](ctx context.Context, r *Run, name string, fn func(ctx context.Context, tx *store.Tx) (T, error)) (T, error) {
	return takeStep(ctx, r, name, fn, stepTx)
}

// StepStore is StepTx for a body whose only effects are its reads and
// writes through tx: no email, no HTTP call, no other store handle. Its
// record and its writes are not committed when it returns but with the
// run's next durable write: the next Step or StepTx, a Sleep, a
// WaitForEvent, a SendEvent, a failing step, or the run's finish. So a
// run of store-only steps costs one store write to finish instead of one
// per step, and its effects still happen exactly once: a crash before
// that write leaves none of them (the steps run again), a crash after
// leaves all of them.
//
// A StepStore body reads the store as the run's earlier steps left it:
// reading a key that a deferred step wrote commits the deferred steps
// first. When a key a deferred step read changed before their commit,
// nothing of them is applied and the handler executes again at once; a
// run that keeps conflicting so commits its steps one by one, as StepTx.
// Code between steps therefore may run more than once, as it may after a
// retry or a crash.
func StepStore[T any](ctx context.Context, r *Run, name string, fn func(ctx context.Context, tx *store.Tx) (T, error)) (T, error) {
	return takeStep(ctx, r, name, fn, stepStore)
}

// StepIncr adds delta to the counter at key, as the step name of run r,
// and returns the value the addition left: the key's integer after it,
// counting this addition and every one before it, whoever made them. The
// addition and the step's record are one atomic commit whose recorded
// output is that value (store.Store.CommitStepsCount): a crash before the
// commit leaves neither, a crash after leaves both, and an execution
// after it gets the recorded value back without adding again. So the
// count is exactly once and the value exact, however many runs add to
// the key at once, without a read before the addition and without a
// conflict: two runs that add 1 to a counter at 99 get 100 and 101, and
// the one that got 100 is the one that reached it. ttl applies when the
// addition creates the key (0: none). A key that holds no integer fails
// the step, without retries.
//
// The step commits at once, with the run's deferred steps (StepStore)
// before it, in one store write.
func StepIncr(ctx context.Context, r *Run, name, key string, delta int64, ttl time.Duration) (int64, error) {
	id, endStep, err := r.begin(name)
	if err != nil {
		return 0, err
	}
	defer endStep()
	if n, done, err := recorded[countOutput](r.steps[id]); done {
		if err == nil && n.unknown {
			return r.countNow(ctx, id, key)
		}
		return n.value, err
	}
	if cause := context.Cause(ctx); cause != nil {
		return 0, r.interrupt(cause) // cancelled, shut down or its lease lost: count nothing
	}
	start := r.now()
	step := store.Step{RunID: r.ID, ID: id, Name: name, Kind: store.StepRun, StartedAt: start}
	var runErr error
	if _, err := store.KeyTTL(ttl); err != nil {
		runErr = NonRetriable(fmt.Errorf("engine: count %q: %w", key, err))
	} else {
		done := step
		done.Status, done.EndedAt = store.StatusCompleted, start
		done.Attempts = []store.Attempt{{StartedAt: start, EndedAt: start}}
		fx := store.Effects{Writes: []store.Write{{Op: store.OpIncrBy, Key: key, Delta: delta, TTL: ttl, Blind: true}}}
		var n int64
		n, runErr = r.count(done, fx)
		if runErr == nil {
			r.e.observe.StepAttempt(r.FunctionID, "completed", 0)
			return n, nil
		}
		if !IsNonRetriable(runErr) {
			return 0, runErr
		}
	}
	return finishStep(r, step, id, start, start, int64(0), nil, runErr)
}

// countOutput is a counted step's recorded output as StepIncr reads it:
// its value, a JSON integer. A step of the same name that an earlier
// release recorded before it counted with StepIncr is read as well, so
// that a run cut short across an upgrade finishes without counting again
// (docs/engine.md, "Upgrades"): an object holding the value as "total"
// (an engine.Step that counted and returned {"previous", "total"}), or
// true (a blind increment, recorded without its value: unknown).
type countOutput struct {
	value   int64
	unknown bool
}

func (c *countOutput) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "true":
		c.unknown = true
		return nil
	case len(b) > 0 && b[0] == '{':
		var legacy struct {
			Total *int64 `json:"total"`
		}
		if err := json.Unmarshal(b, &legacy); err != nil {
			return err
		}
		if legacy.Total == nil {
			return fmt.Errorf("a counted step's output %s has no total", b)
		}
		c.value = *legacy.Total
		return nil
	}
	return json.Unmarshal(b, &c.value)
}

// countNow is the value of a counted step recorded without it (an earlier
// release's blind increment): the counter's value now, read unchecked,
// which counts this run's addition and any made since.
func (r *Run) countNow(ctx context.Context, id, key string) (int64, error) {
	v, err := r.e.store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, &StepError{Step: id, Err: err, Message: "reading the count an earlier release recorded without its value: " + err.Error()}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, &StepError{Step: id, Err: err, Message: fmt.Sprintf("the counter %q holds %q, not an integer", key, v)}
	}
	return n, nil
}

// recorded returns what a step recorded by an earlier execution gives
// its caller (done true): its completed output decoded, or the error of
// its failure. A step not recorded, or recorded still running, is not
// done.
func recorded[T any](prev store.Step) (out T, done bool, err error) {
	switch prev.Status {
	case store.StatusCompleted:
		if len(prev.Output) > 0 && string(prev.Output) != "null" {
			if err := json.Unmarshal(prev.Output, &out); err != nil {
				return out, true, &StepError{Step: prev.ID, Err: err, Message: "decoding recorded output: " + err.Error()}
			}
		}
		return out, true, nil
	case store.StatusFailed:
		return out, true, &StepError{Step: prev.ID, Message: prev.Error}
	}
	return out, false, nil
}

// count commits the counted step s, whose effects fx are its increment,
// after the run's deferred steps, in one store write, and records it
// with the value the store answers as its output. An increment the store
// refused on its own (its key holds no integer) is a non-retriable error;
// any other failure stops the run as a failed commit of deferred steps
// does (failedCommitLocked).
func (r *Run) count(s store.Step, fx store.Effects) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return 0, errClosed(s.ID)
	}
	if _, clash := r.pendingWrites.BlindClash(fx); clash {
		if err := r.flushLocked(); err != nil {
			return 0, err
		}
	}
	if r.stop != nil {
		return 0, r.stop
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
	defer cancel()
	batch := append(slices.Clip(r.pending), store.StepCommit{Step: s, Effects: fx})
	n, err := r.e.store.CommitStepsCount(ctx, r.lease, batch)
	switch {
	case err == nil:
		r.committedLocked()
	case len(r.pending) == 0 && errors.Is(err, store.ErrInvalid):
		return 0, NonRetriable(fmt.Errorf("engine: count step %q of %q: %w", s.ID, fx.Writes[0].Key, err))
	default:
		return 0, r.failedCommitLocked(fmt.Errorf("engine: count step %q: %w", s.ID, err))
	}
	s.Output = json.RawMessage(strconv.FormatInt(n, 10))
	r.steps[s.ID] = s
	return n, nil
}

// stepMode is how a step commits.
type stepMode int

const (
	stepPlain stepMode = iota // Step: the body's result, no effects
	stepTx                    // StepTx: with its effects, at once
	stepStore                 // StepStore: with its effects, with the run's next write
)

// maxConflicts bounds how often a StepTx body runs again after a conflict
// within one attempt; past it the attempt fails and is retried.
const maxConflicts = 50

// errTooManyConflicts is the error of an attempt that kept conflicting.
var errTooManyConflicts = fmt.Errorf("engine: %d commits in a row conflicted with other runs", maxConflicts)

func takeStep[T any](ctx context.Context, r *Run, name string, fn func(ctx context.Context, tx *store.Tx) (T, error), mode stepMode) (T, error) {
	var zero T
	if mode == stepStore && r.replays >= maxReplays {
		mode = stepTx
	}
	transactional := mode != stepPlain
	id, endStep, err := r.begin(name)
	if err != nil {
		return zero, err
	}
	defer endStep()
	prev := r.steps[id]
	if out, done, err := recorded[T](prev); done {
		if err != nil {
			return zero, err
		}
		return out, nil
	}
	if prev.Status == store.StatusRunning && r.now().Before(prev.WakeAt) {
		return zero, r.suspend(prev, store.StatusRunning, prev.WakeAt)
	}
	if mode != stepStore {
		// The body may act outside the store: what the run did before it
		// is recorded first.
		if err := r.flush(); err != nil {
			return zero, err
		}
	}
	step := store.Step{RunID: r.ID, ID: id, Name: name, Kind: store.StepRun, Attempts: prev.Attempts, StartedAt: prev.StartedAt}
	start := r.now()
	if step.StartedAt.IsZero() {
		step.StartedAt = start
	}
	var unlock func()
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()
	for conflicts := 0; ; conflicts++ {
		var tx *store.Tx
		switch mode {
		case stepTx:
			tx = store.NewTx(r.e.store)
		case stepStore:
			tx = store.NewTx(pendingKV{KV: r.e.store, r: r})
		}
		out, runErr := call(ctx, func(ctx context.Context) (T, error) { return fn(ctx, tx) })
		end := r.now()
		if cause := context.Cause(ctx); cause != nil && runErr != nil {
			return zero, r.interrupt(cause)
		}
		if err := r.stopped(); err != nil {
			// A commit of deferred steps the body's reads made failed.
			return zero, err
		}
		var data []byte
		if runErr == nil {
			if data, err = json.Marshal(out); err != nil {
				runErr = NonRetriable(fmt.Errorf("encoding step output: %w", err))
			}
		}
		if runErr == nil && transactional {
			done := step
			done.Status, done.Output, done.EndedAt = store.StatusCompleted, data, end
			done.Attempts = append(slices.Clone(step.Attempts), store.Attempt{StartedAt: start, EndedAt: end})
			if mode == stepStore {
				if err := r.deferStep(done, tx.Effects()); err != nil {
					return zero, err
				}
				r.e.observe.StepAttempt(r.FunctionID, "completed", end.Sub(start))
				return out, nil
			}
			err := r.commit(done, tx.Effects())
			if errors.Is(err, store.ErrConflict) {
				r.e.observe.StepConflict(r.FunctionID)
				if conflicts+1 < maxConflicts {
					if unlock == nil {
						unlock = r.e.hotKeys.lock(tx.Effects().Keys())
					}
					continue
				}
				runErr = errTooManyConflicts
			} else if IsNonRetriable(err) {
				runErr = err
			} else {
				if err == nil {
					r.e.observe.StepAttempt(r.FunctionID, "completed", end.Sub(start))
					return out, nil
				}
				return zero, err
			}
		}
		return finishStep(r, step, id, start, end, out, data, runErr)
	}
}

// hotKeys serialises, within one engine, the bodies that run again after
// a conflict: a body that conflicted runs again holding the stripe of the
// first key it touched, so the runs of this process that contend for a hot
// key take turns instead of conflicting with each other again. Runs of
// other processes still conflict with them, and win or lose by turns.
type hotKeys struct{ stripes [64]sync.Mutex }

// lock takes the stripe of keys[0] and returns its unlock.
func (h *hotKeys) lock(keys []string) func() {
	f := fnv.New32a()
	if len(keys) > 0 {
		f.Write([]byte(keys[0]))
	}
	m := &h.stripes[f.Sum32()%uint32(len(h.stripes))]
	m.Lock()
	return m.Unlock
}

// finishStep records the end of one attempt of step: its result, its
// failure, or its retry.
func finishStep[T any](r *Run, step store.Step, id string, start, end time.Time, out T, data []byte, runErr error) (T, error) {
	var zero T
	outcome := "completed"
	switch {
	case runErr == nil:
	case IsNonRetriable(runErr) || len(step.Attempts)+1 > r.fn.retries():
		outcome = "failed"
	default:
		outcome = "retry"
	}
	r.e.observe.StepAttempt(r.FunctionID, outcome, end.Sub(start))
	if runErr == nil {
		step.Status, step.Output, step.EndedAt = store.StatusCompleted, data, end
		step.Attempts = append(step.Attempts, store.Attempt{StartedAt: start, EndedAt: end})
		if err := r.save(step, nil); err != nil {
			return zero, err
		}
		return out, nil
	}
	step.Attempts = append(step.Attempts, store.Attempt{StartedAt: start, EndedAt: end, Error: runErr.Error()})
	step.Error = runErr.Error()
	if IsNonRetriable(runErr) || len(step.Attempts) > r.fn.retries() {
		step.Status, step.EndedAt = store.StatusFailed, end
		if err := r.save(step, nil); err != nil {
			return zero, err
		}
		return zero, &StepError{Step: id, Err: runErr, Message: runErr.Error()}
	}
	step.Status = store.StatusRunning
	step.WakeAt = r.e.retryAt(r.fn, len(step.Attempts), runErr, end)
	return zero, r.suspend(step, store.StatusRunning, step.WakeAt)
}

// call runs fn, turning a panic into an error.
func call[T any](ctx context.Context, fn func(context.Context) (T, error)) (out T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn(ctx)
}

// retryAt is when retry number retry (1-based) of a failed attempt happens.
func (e *Engine) retryAt(fn *registered, retry int, err error, failedAt time.Time) time.Time {
	if at, ok := retryTime(err); ok && at.After(failedAt) {
		return at
	}
	return failedAt.Add(e.jitter(fn.backoff(retry)))
}

// Sleep suspends the run durably for d; no goroutine is held meanwhile.
func (r *Run) Sleep(ctx context.Context, name string, d time.Duration) error {
	return r.sleep(name, func(now time.Time) time.Time { return now.Add(d) })
}

// SleepUntil suspends the run durably until t.
func (r *Run) SleepUntil(ctx context.Context, name string, t time.Time) error {
	return r.sleep(name, func(time.Time) time.Time { return t })
}

func (r *Run) sleep(name string, until func(now time.Time) time.Time) error {
	id, endStep, err := r.begin(name)
	if err != nil {
		return err
	}
	defer endStep()
	now := r.now()
	prev, seen := r.steps[id]
	if seen && prev.Status == store.StatusCompleted {
		return nil
	}
	step := prev
	if !seen {
		step = store.Step{RunID: r.ID, ID: id, Name: name, Kind: store.StepSleep, StartedAt: now, WakeAt: until(now)}
	}
	if now.Before(step.WakeAt) {
		step.Status = store.StatusSleeping
		return r.suspend(step, store.StatusSleeping, step.WakeAt)
	}
	step.Status, step.EndedAt = store.StatusCompleted, now
	return r.save(step, nil)
}

// Completed reports whether the run recorded step id as completed. A
// handler whose step was renamed asks it of the step's earlier id, so that
// a run an earlier release cut short does not do again what that release
// did under it.
func (r *Run) Completed(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.steps[id]
	return ok && s.Status == store.StatusCompleted
}

// SendEvent publishes events as a step: they are stored, with the runs they
// trigger, atomically with the step's record, so a retried or replayed run
// never sends them twice. (On a partitioned store an event that belongs
// in another partition than the run's is stored ahead of the record,
// under an id derived from run, step and index, so that the step executed
// again stores it once.) It returns the events' ids.
func (r *Run) SendEvent(ctx context.Context, name string, evs ...IncomingEvent) ([]string, error) {
	id, endStep, err := r.begin(name)
	if err != nil {
		return nil, err
	}
	defer endStep()
	if prev, ok := r.steps[id]; ok && prev.Status == store.StatusCompleted {
		var ids []string
		if err := json.Unmarshal(prev.Output, &ids); err != nil {
			return nil, &StepError{Step: id, Err: err, Message: "decoding recorded output: " + err.Error()}
		}
		return ids, nil
	}
	pubs := make([]store.Publication, len(evs))
	ids := make([]string, len(evs))
	for i, ev := range evs {
		if err := checkIncoming(i, ev); err != nil {
			return nil, &StepError{Step: id, Err: err, Message: err.Error()}
		}
		if r.e.partitions > 1 && ev.InternalID == "" {
			ev.InternalID = derivedID(r.ID, id, i)
		}
		pubs[i] = r.e.publication(ev)
		r.e.place(&pubs[i], store.PartitionOf(r.ID, r.e.partitions), ev.InternalID != "")
		ids[i] = pubs[i].Event.ID
	}
	out, _ := json.Marshal(ids)
	now := r.now()
	step := store.Step{
		RunID: r.ID, ID: id, Name: name, Kind: store.StepSendEvent, Status: store.StatusCompleted,
		Output: out, StartedAt: now, EndedAt: now, Attempts: []store.Attempt{{StartedAt: now, EndedAt: now}},
	}
	if err := r.save(step, pubs); err != nil {
		return nil, err
	}
	return ids, nil
}

// WaitOptions describe what WaitForEvent waits for.
type WaitOptions struct {
	Event string // the awaited event's name
	// Match is a dotted path ("data.id") whose value must be the same in the
	// awaited event and in this run's trigger event. Empty: any event named
	// Event matches.
	Match   string
	Timeout time.Duration
}

// WaitForEvent suspends the run until a matching event arrives (returning
// it) or the timeout passes (returning nil, nil).
func (r *Run) WaitForEvent(ctx context.Context, name string, opts WaitOptions) (*store.Event, error) {
	id, endStep, err := r.begin(name)
	if err != nil {
		return nil, err
	}
	defer endStep()
	now := r.now()
	prev, seen := r.steps[id]
	if seen && prev.Status == store.StatusCompleted {
		if len(prev.Output) == 0 || string(prev.Output) == "null" {
			return nil, nil
		}
		var ev store.Event
		if err := json.Unmarshal(prev.Output, &ev); err != nil {
			return nil, &StepError{Step: id, Err: err, Message: "decoding recorded event: " + err.Error()}
		}
		return &ev, nil
	}
	if seen {
		if now.Before(prev.WakeAt) {
			return nil, r.suspend(prev, store.StatusSleeping, prev.WakeAt)
		}
		prev.Status, prev.EndedAt, prev.Output, prev.Wait = store.StatusCompleted, now, json.RawMessage("null"), nil
		return nil, r.save(prev, nil)
	}
	if opts.Event == "" || opts.Timeout <= 0 {
		return nil, &StepError{Step: id, Message: "WaitForEvent needs an event name and a positive timeout"}
	}
	w := &store.Wait{Event: opts.Event}
	if opts.Match != "" {
		v, ok, err := keypath.Lookup(eventDoc(r.Event), opts.Match)
		if err != nil {
			return nil, &StepError{Step: id, Err: err, Message: err.Error()}
		}
		if !ok {
			return nil, &StepError{Step: id, Message: fmt.Sprintf("the trigger event has no %s to match", opts.Match)}
		}
		w.MatchPath, w.MatchValue = opts.Match, v
	}
	step := store.Step{
		RunID: r.ID, ID: id, Name: name, Kind: store.StepWait, Status: store.StatusWaiting,
		StartedAt: now, WakeAt: now.Add(opts.Timeout), Wait: w,
	}
	return nil, r.suspend(step, store.StatusSleeping, step.WakeAt)
}
