// Package store defines the storage contract of the cyberdrew engine: events,
// runs and their steps, the run queue with leases, flow-control state, the
// key-value data the site jobs keep, change notifications and retention.
//
// Every backend (internal/store/sqlite, internal/store/redis) implements Store
// and must pass the conformance suite in internal/store/storetest. Behaviour
// changes start in that suite.
//
// The engine decides what a run is (which functions an event triggers and the
// flow-control keys evaluated from it); the store applies every transition
// atomically: one SQL transaction or one Lua script per call.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Backends map their own errors (sql.ErrNoRows, redis.Nil)
// onto these at their boundary; callers compare with errors.Is.
var (
	// ErrNotFound: no event, run or key by that id.
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost: the caller's lease on a run expired, was taken over by
	// another worker, or the run was cancelled or finished meanwhile.
	ErrLeaseLost = errors.New("lease lost")
	// ErrFinished: the run has already finished (cancel or transition refused).
	ErrFinished = errors.New("run already finished")
	// ErrUnavailable: the backend cannot be reached (intake answers 503).
	ErrUnavailable = errors.New("store unavailable")
	// ErrInvalid: the request violates the contract (bad cursor, empty name).
	ErrInvalid = errors.New("invalid request")
	// ErrMisconfigured: the store (or a setting the daemon starts with)
	// cannot work as configured, whatever is retried: a Redis database
	// number the server does not have. serve exits 3 on it, which the
	// systemd unit does not restart.
	ErrMisconfigured = errors.New("misconfigured")
	// ErrNotReplicated: the write was done but fewer replicas than asked
	// confirmed it in time, so a failover may lose it. It is an
	// ErrUnavailable: callers that do not tell it apart answer 503.
	ErrNotReplicated = fmt.Errorf("%w: not confirmed by enough replicas", ErrUnavailable)
)

// Status is a run's or a step's state, in Inngest's words.
type Status string

// Run and step statuses.
const (
	StatusQueued    Status = "Queued"
	StatusRunning   Status = "Running"
	StatusSleeping  Status = "Sleeping"
	StatusWaiting   Status = "Waiting" // step only: WaitForEvent pending
	StatusCompleted Status = "Completed"
	StatusFailed    Status = "Failed"
	StatusCancelled Status = "Cancelled"
	StatusSkipped   Status = "Skipped"
)

// Finished reports whether s is a terminal run status.
func (s Status) Finished() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusSkipped:
		return true
	}
	return false
}

// Event is an accepted event: Inngest's payload plus the id the server gave it.
type Event struct {
	ID         string          `json:"internal_id"`  // ULID assigned at intake
	ClientID   string          `json:"id,omitempty"` // client-supplied idempotency id
	Name       string          `json:"name"`
	Data       json.RawMessage `json:"data"`
	User       json.RawMessage `json:"user,omitempty"`
	TS         int64           `json:"ts"` // milliseconds since the epoch
	Version    string          `json:"v,omitempty"`
	ReceivedAt time.Time       `json:"received_at"`
}

// PublicID is the event's identity as every reader sees it (key expressions,
// listings, the stream): the client's id when it sent one, otherwise the id
// the server gave it. An event sent without an id is never "".
func (e Event) PublicID() string {
	if e.ClientID != "" {
		return e.ClientID
	}
	return e.ID
}

// RunSpec is a run the engine wants created for an event, with the
// flow-control keys already evaluated from that event. The store applies, in
// this order and atomically with the event itself: idempotency, rate limit,
// singleton, debounce.
type RunSpec struct {
	// ID is a ULID chosen by the caller. It may be the event's own id (the
	// engine gives an event's first run its event's id): the Redis store
	// keeps such a run, queued without flow control, in its event until it
	// is claimed (internal/store/redis, layout 7).
	ID         string
	FunctionID string
	// AvailableAt is when the run may start (the event's ts when in the future).
	AvailableAt time.Time
	// IdempotencyKey: at most one run per key while the key lives
	// (IdempotencyTTL). A second spec with a live key is stored as a
	// Skipped run whose error names the key and the run that holds it.
	IdempotencyKey string
	IdempotencyTTL time.Duration
	// RateLimitKey with RateLimit > 0: at most RateLimit runs per
	// RateLimitPeriod per key (GCRA); excess runs are stored as Skipped.
	RateLimitKey    string
	RateLimit       int
	RateLimitPeriod time.Duration
	// SingletonKey: while an unfinished run with this key exists, the new
	// run is stored as Skipped.
	SingletonKey string
	// DebounceKey with DebouncePeriod > 0: while a run with this key is still
	// Queued and has never started, the new event replaces its trigger and
	// its start moves to now+DebouncePeriod, never past its first
	// creation + DebounceMaxWait (when > 0). No new run is created.
	DebounceKey     string
	DebouncePeriod  time.Duration
	DebounceMaxWait time.Duration
	// ConcurrencyKey with ConcurrencyLimit > 0: at most ConcurrencyLimit runs
	// with this key are leased at once; Claim skips the others.
	ConcurrencyKey   string
	ConcurrencyLimit int
	// FinishTimeout > 0: the run is due to be cancelled this long after it
	// first starts (FinishBy is set on first claim).
	FinishTimeout time.Duration
	// LeaseTo, when its Owner is set, asks for the run to be leased at
	// once, in the publication's atomic unit, as Claim would lease it:
	// the worker pool that publishes an event can start its run without a
	// claim. The store grants it when the run is created Queued (not
	// skipped, nor folded into a pending run by debounce) and may start
	// now (its AvailableAt is not after the publication), and the spec has
	// no debounce or concurrency key (whose runs Claim orders). The run's
	// RunRef then carries the lease; otherwise the run is queued as usual.
	LeaseTo LeaseRequest
}

// LeaseRequest asks for a lease for Owner until TTL after now.
type LeaseRequest struct {
	Owner string
	TTL   time.Duration
}

// Leasable reports whether a spec may be leased when it is published
// (RunSpec.LeaseTo), as far as the spec alone tells: the store also
// needs the run created Queued.
func (s RunSpec) Leasable(now time.Time) bool {
	return !s.AvailableAt.After(now) && s.DebounceKey == "" && s.ConcurrencyKey == ""
}

// LeaseNow reports whether the spec asks for a lease (LeaseTo) and may
// get one when it is published at now (Leasable): the rule both stores
// apply, to a run they create Queued.
func (s RunSpec) LeaseNow(now time.Time) bool {
	return s.LeaseTo.Owner != "" && s.Leasable(now)
}

// Publication is an event to store together with the runs it triggers.
// A non-empty Event.ClientID that was seen within ClientIDTTL makes the
// publication a duplicate: nothing is stored and the first event's id is
// answered. So does an Event.ID that is already stored (a client retrying a
// request whose event ids derive from the same seed).
type Publication struct {
	Event       Event
	ClientIDTTL time.Duration
	Runs        []RunSpec
}

// Published tells what happened to one Publication.
type Published struct {
	EventID   string
	Duplicate bool
	Runs      []RunRef
}

// RunRef names a run an event led to and in which state it ended up.
type RunRef struct {
	ID         string
	FunctionID string
	Status     Status
	// Existing is true when no run was created: the debounce key folded
	// the event into this pending run.
	Existing bool
	// Skip says why the event started no run of its own ("" when it did):
	// a Skipped run (idempotency, rate limit, singleton) or a fold into a
	// pending run (debounce).
	Skip SkipReason
	// Lease is the run's lease when its spec asked for one
	// (RunSpec.LeaseTo) and the store granted it; the run is Running.
	Lease *Lease
}

// SkipReason names the flow-control rule that kept an event from starting
// a run of its own.
type SkipReason string

// Skip reasons. A Skipped run's Error says the same in words:
// `idempotency key "<key>" already used by run <id>`, "rate limit
// exceeded", "singleton: run <id> is unfinished".
const (
	SkipIdempotency SkipReason = "idempotency"
	SkipRateLimit   SkipReason = "rate_limit"
	SkipSingleton   SkipReason = "singleton"
	SkipDebounce    SkipReason = "debounce"
)

// Run is one execution of a function.
type Run struct {
	ID         string
	FunctionID string
	EventID    string   // the trigger event (the latest one for a debounced run)
	EventIDs   []string // every event that fed this run, oldest first
	Status     Status
	Attempt    int // function-level attempt (errors returned outside steps), 0-based
	CreatedAt  time.Time
	StartedAt  time.Time // zero until first claimed
	EndedAt    time.Time // zero until finished
	// AvailableAt is when the run can next be claimed (zero when finished).
	// For a leased run it is the lease expiry.
	AvailableAt time.Time
	Output      json.RawMessage
	Error       string

	IdempotencyKey   string
	SingletonKey     string
	DebounceKey      string
	ConcurrencyKey   string
	ConcurrencyLimit int
	FinishTimeout    time.Duration
	FinishBy         time.Time // zero unless FinishTimeout > 0 and started
	LeaseOwner       string    // worker id holding the lease, if leased
}

// StepKind says what a step does.
type StepKind string

// Step kinds.
const (
	StepRun       StepKind = "run"
	StepSleep     StepKind = "sleep"
	StepSendEvent StepKind = "sendEvent"
	StepWait      StepKind = "waitForEvent"
)

// Attempt is one try of a step.
type Attempt struct {
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
	Error     string    `json:"error,omitempty"`
}

// Step is the durable record of one named step of a run. ID is unique within
// the run ("name", then "name:1", "name:2" for repeats).
type Step struct {
	RunID    string
	ID       string
	Name     string
	Kind     StepKind
	Status   Status // Running (retrying), Sleeping, Waiting, Completed, Failed
	Attempts []Attempt
	Output   json.RawMessage
	Error    string
	// WakeAt: for Sleeping the end of the sleep, for Waiting the timeout,
	// for Running the next attempt.
	WakeAt    time.Time
	StartedAt time.Time
	EndedAt   time.Time
	// Wait describes a pending WaitForEvent (Kind StepWait, Status Waiting).
	Wait *Wait
}

// Wait is a pending WaitForEvent: the first event named Event whose value at
// MatchPath equals MatchValue (when MatchPath is set) completes the step with
// that event as its output.
type Wait struct {
	Event      string          `json:"event"`
	MatchPath  string          `json:"match_path,omitempty"`
	MatchValue json.RawMessage `json:"match_value,omitempty"`
}

// Lease is a worker's claim on a run. Every call that changes a leased run
// passes it back; the store refuses with ErrLeaseLost when it is no longer
// current.
type Lease struct {
	RunID string
	Token string
	Owner string
	Until time.Time
	Run   Run
	Steps []Step // the run's recorded steps, for memoization
	// Event is the run's trigger event (Run.EventID) as GetEvent returns
	// it, read with the claim so a worker need not fetch it; zero when the
	// event is gone or could not be read then (the worker reads it).
	Event Event
	// TakenOver is true when Claim took the run from another worker whose
	// lease had lapsed: the run still held a lease (a lease token) when it
	// was claimed. It is false for a run claimed while queued, suspended
	// (sleeping, waiting, retrying) or released, which holds no lease.
	TakenOver bool
}

// Outcome finishes a run.
type Outcome struct {
	Status Status // Completed, Failed or Cancelled
	Output json.RawMessage
	Error  string
	// Emit is published atomically with the outcome (function.failed).
	Emit []Publication
	// Steps are recorded before the outcome, in the same atomic unit, as
	// CommitSteps records them: the run's deferred store-only steps
	// (engine.StepStore), whose effects commit with the finish. When a
	// read of theirs no longer holds, Finish returns ErrConflict and
	// applies nothing: the run stays leased and unfinished.
	Steps []StepCommit
}

// StepCommit is one step for CommitSteps and Outcome.Steps: its record,
// the events it emits, and its KV effects.
type StepCommit struct {
	Step    Step
	Emit    []Publication
	Effects Effects
}

// Suspension hands a leased run back until AvailableAt.
type Suspension struct {
	Status      Status // Running (retry), Sleeping (sleep, wait) or Queued
	AvailableAt time.Time
	Attempt     int // the new function-level attempt counter
}

// RunFilter selects runs for listing, newest first.
type RunFilter struct {
	FunctionID string
	Statuses   []Status
	Since      time.Time // created at or after
	Until      time.Time // created before (zero: no bound)
	EventID    string
	Limit      int    // default 50, at most 1000
	Cursor     string // opaque, from the previous page
}

// EventFilter selects events for listing, newest first.
type EventFilter struct {
	Name   string
	Since  time.Time
	Until  time.Time
	Limit  int
	Cursor string
}

// Page is one page of a listing; Cursor is empty on the last page.
type Page[T any] struct {
	Items  []T
	Cursor string
}

// ChangeKind names what a Change is about.
type ChangeKind string

// Change kinds.
const (
	ChangeEvent ChangeKind = "event" // an event was stored
	ChangeRun   ChangeKind = "run"   // a run was created or changed status
	ChangeStep  ChangeKind = "step"  // a step was recorded
)

// Change is a notification published after a transition commits.
type Change struct {
	Kind       ChangeKind `json:"kind"`
	EventID    string     `json:"event_id,omitempty"`
	EventName  string     `json:"event_name,omitempty"`
	RunID      string     `json:"run_id,omitempty"`
	FunctionID string     `json:"function_id,omitempty"`
	Status     Status     `json:"status,omitempty"`
	StepID     string     `json:"step_id,omitempty"`
	// AvailableAt is set when a run became claimable at that time; workers
	// use it as their wake-up.
	AvailableAt time.Time `json:"available_at,omitzero"`
	At          time.Time `json:"at"`
}

// Engine is the run side of the store.
type Engine interface {
	// Publish stores events and the runs they trigger, each publication in
	// order and all atomically, durable before it returns.
	Publish(ctx context.Context, pubs []Publication) ([]Published, error)
	// CreateRuns creates runs for an already stored event (rerun, invoke).
	CreateRuns(ctx context.Context, eventID string, specs []RunSpec) ([]RunRef, error)

	GetEvent(ctx context.Context, id string) (Event, error)
	// EventByClientID returns the event last stored with the client id
	// (Event.ClientID, the event API's "id") while the id still
	// deduplicates (Publication.ClientIDTTL), ErrNotFound otherwise.
	EventByClientID(ctx context.Context, clientID string) (Event, error)
	ListEvents(ctx context.Context, f EventFilter) (Page[Event], error)
	GetRun(ctx context.Context, id string) (Run, error)
	ListRuns(ctx context.Context, f RunFilter) (Page[Run], error)
	Steps(ctx context.Context, runID string) ([]Step, error)

	// CancelRun cancels an unfinished run (ErrFinished otherwise); a worker
	// holding it loses its lease.
	CancelRun(ctx context.Context, id, reason string) (Run, error)

	// Claim leases up to n claimable runs (AvailableAt <= now, not leased or
	// lease lapsed, within concurrency limits), oldest AvailableAt first.
	Claim(ctx context.Context, owner string, n int, ttl time.Duration) ([]Lease, error)
	// RenewLeases extends each lease to now+ttl, each on its own, in one
	// call: a worker pool renews all the runs it holds at once. The
	// result holds, per lease, nil or ErrLeaseLost (that lease expired, was
	// taken over, or its run was cancelled or finished); the error is for
	// the call as a whole (ErrInvalid, ErrUnavailable).
	RenewLeases(ctx context.Context, ls []*Lease, ttl time.Duration) ([]error, error)
	// SaveStep records a step (a finished attempt, a sleep, a wait or a
	// result) and publishes emit atomically with it.
	SaveStep(ctx context.Context, l *Lease, s Step, emit []Publication) error
	// CommitStep is SaveStep for a transactional step: in the same atomic
	// unit it checks that every read of fx still holds (ErrConflict when
	// one does not) and applies its writes in order. A refused commit
	// (ErrLeaseLost, ErrConflict) applies nothing; except on a store that
	// applies effects ahead of their record (a partitioned Redis store on
	// a Cluster), where a commit refused for a lost lease may have applied
	// them: the step's next commit then applies nothing more, records the
	// step as that commit made it and answers ErrSuperseded. Either way
	// the writes apply once across the step's commits.
	CommitStep(ctx context.Context, l *Lease, s Step, emit []Publication, fx Effects) error
	// CommitSteps is CommitStep for several steps of one run, in one
	// atomic unit: every read of every step must still hold, then each
	// step's writes apply and its record is saved, in order. A step may
	// not read a key an earlier step of the batch wrote, nor write it
	// blindly unless every earlier write of it was the same blind op
	// (MergeEffects; the engine commits the earlier steps first when a
	// step would): ErrInvalid.
	CommitSteps(ctx context.Context, l *Lease, steps []StepCommit) error
	// CommitStepsCount is CommitSteps for a batch whose last step counts
	// (engine.StepIncr): its only effect is one blind increment
	// (CheckCounted), and its recorded output is the value that increment
	// left, as a JSON number, which the atomic unit itself writes in place
	// of its Step.Output. It returns that value. So the value is exact
	// however many runs increment the key at once, and it is recorded with
	// the increment or not at all.
	CommitStepsCount(ctx context.Context, l *Lease, steps []StepCommit) (int64, error)
	// Suspend ends the lease and makes the run claimable at AvailableAt.
	Suspend(ctx context.Context, l *Lease, s Suspension) error
	// Finish ends the run.
	Finish(ctx context.Context, l *Lease, o Outcome) error
	// Release hands a leased run back at once, unchanged (shutdown).
	Release(ctx context.Context, l *Lease) error
	// NextWake is the earliest time a run becomes claimable (queued, sleeping,
	// retrying or leased until then); ok is false when nothing is pending.
	NextWake(ctx context.Context) (at time.Time, ok bool, err error)
	// QueueDepth counts the runs claimable now (due, not leased, or leased
	// past their lease's end): the backlog the workers have not picked up.
	QueueDepth(ctx context.Context) (int, error)

	// Subscribe delivers changes until ctx ends. A subscriber too slow to
	// keep up loses changes rather than slowing the store; it receives a
	// Change with Kind "" to say it lagged and should re-read.
	Subscribe(ctx context.Context) <-chan Change

	// Prune deletes finished runs (with their steps) and events that ended
	// or arrived before cutoff, at most batch of each per call, and expired
	// keys; it returns how many rows it removed. Events with unfinished runs
	// are kept.
	Prune(ctx context.Context, cutoff time.Time, batch int) (int, error)
	// PruneFunction deletes Completed runs of one function (with their
	// steps) that ended before cutoff, at most batch per call, and the
	// events they leave without any run; it returns how many runs and
	// events it removed. It serves a function's own retention, shorter
	// than Prune's.
	PruneFunction(ctx context.Context, functionID string, cutoff time.Time, batch int) (int, error)
}

// CommitReader is what a store implements when reading a key right after
// a commit costs it a round trip of its own (Redis): CommitStepsGet is
// CommitSteps followed by Get(key), sent together: err is the commit's,
// and only when it is nil do value and readErr (Get's answer) count. The
// read sees the commit. The engine uses it when a step reads a key the
// run's deferred steps wrote (a total after a blind increment; a counter
// whose value the step needs is better an engine.StepIncr, which reads
// nothing).
type CommitReader interface {
	CommitStepsGet(ctx context.Context, l *Lease, steps []StepCommit, key string) (value string, readErr, err error)
}

// KV is the key-value data the site jobs keep: the names and semantics of
// Redis strings, counters and sets, so both backends serve the website's keys.
// A ttl of 0 means no expiry; an expired key reads as absent.
type KV interface {
	Get(ctx context.Context, key string) (string, error) // ErrNotFound when absent
	Set(ctx context.Context, key, value string, ttl time.Duration) error
	// SetNX sets key only when absent and reports whether it did.
	SetNX(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	Delete(ctx context.Context, keys ...string) error
	// IncrBy adds delta to the integer at key (absent = 0) and returns the
	// new value. ttl > 0 sets the expiry when the key is created.
	IncrBy(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)
	// SetAdd adds members to the set at key and returns how many were new.
	// ttl > 0 sets the expiry when the key is created.
	SetAdd(ctx context.Context, key string, ttl time.Duration, members ...string) (int, error)
	SetCard(ctx context.Context, key string) (int64, error)
	// SetHas reports, for each member, whether the set at key holds it
	// (none when the key is absent).
	SetHas(ctx context.Context, key string, members ...string) ([]bool, error)
	SetMembers(ctx context.Context, key string) ([]string, error)
	// Scan returns up to count live keys starting with prefix after cursor,
	// in key order; next is "" when done.
	Scan(ctx context.Context, prefix, cursor string, count int) (keys []string, next string, err error)
	// TTL returns the remaining time to live; 0 for no expiry, ErrNotFound
	// when absent.
	TTL(ctx context.Context, key string) (time.Duration, error)
}

// Store is the whole contract.
type Store interface {
	Engine
	KV
	// Kind names the backend ("sqlite", "redis") for health and the dash.
	Kind() string
	// Partitions is how many partitions the store spreads its records
	// over by id (partition.go); 1 is not spread. A caller that mints ids
	// places them in theirs.
	Partitions() int
	// Ping reports whether the backend is reachable (readiness).
	Ping(ctx context.Context) error
	Close() error
}
