package engine

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/keypath"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// Internal event names. The inngest/ and cyberdrew/ prefixes are reserved:
// intake refuses them, the engine emits them.
const (
	EventFunctionFailed  = "cyberdrew/function.failed"
	EventScheduledTimer  = "cyberdrew/scheduled.timer"
	EventFunctionInvoked = "inngest/function.invoked"
)

// reservedPrefixes may not be sent from outside.
var reservedPrefixes = []string{"inngest/", "cyberdrew/"}

// ReservedPrefix is the reserved prefix (inngest/, cyberdrew/) that name
// starts with, or "" when clients may send events of that name.
func ReservedPrefix(name string) string {
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p) {
			return p
		}
	}
	return ""
}

// Retention windows fixed by the design.
const (
	eventIDTTL     = 24 * time.Hour // client id dedup
	idempotencyTTL = 24 * time.Hour
)

// Options configure an Engine.
type Options struct {
	Store  store.Store
	Clock  clockwork.Clock // nil: the real clock
	Logger *slog.Logger
	// Jitter adds randomness to a retry delay; nil uses DefaultJitter.
	Jitter func(time.Duration) time.Duration
	// Validate, when set, checks each incoming event before it is accepted
	// (the site's event schemas); a *ValidationError rejects the request.
	Validate func(index int, ev IncomingEvent) error
	// Observer is told of runs, steps and store failures; nil tells nobody.
	Observer Observer
}

// Engine holds the function registry and turns events into runs. Workers
// (WorkerPool) execute the runs; the Scheduler fires cron triggers.
type Engine struct {
	store    store.Store
	clock    clockwork.Clock
	log      *slog.Logger // component=engine
	baseLog  *slog.Logger // for the engine's other components
	jitter   func(time.Duration) time.Duration
	validate func(int, IncomingEvent) error
	observe  Observer

	stopStats context.CancelFunc
	statsDone chan struct{}

	mu        sync.RWMutex
	functions map[string]*registered
	order     []string // registration order, for listings
	stats     *statsBook
	pulse     pulse

	ids idSource
	// partitions is the store's (store.Partitions): on a partitioned
	// store the engine mints ids in the partition they belong to (place).
	partitions int

	hotKeys hotKeys

	// local is the worker pool started on this engine, which the runs of
	// the events it publishes may start on at once (WorkerPool.reserve).
	local atomic.Pointer[WorkerPool]
}

// registered is a function with its parsed triggers.
type registered struct {
	Function
	events  []wire.EventPattern
	eventIf []func(store.Event) bool
	crons   []cronSchedule
}

// New returns an engine with an empty registry.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("engine: a store is required")
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Jitter == nil {
		opts.Jitter = DefaultJitter
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	return &Engine{
		store:      opts.Store,
		clock:      opts.Clock,
		log:        opts.Logger.With("component", "engine"),
		baseLog:    opts.Logger,
		jitter:     opts.Jitter,
		validate:   opts.Validate,
		observe:    opts.Observer,
		functions:  map[string]*registered{},
		stats:      newStatsBook(),
		ids:        idSource{entropy: ulid.Monotonic(rand.Reader, 0)},
		partitions: opts.Store.Partitions(),
	}, nil
}

// Register adds functions to the registry. It checks every option: ids are
// unique, triggers parse, keys are valid paths.
func (e *Engine) Register(fns ...Function) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, fn := range fns {
		r, err := prepare(fn)
		if err != nil {
			return err
		}
		if _, dup := e.functions[fn.ID]; dup {
			return fmt.Errorf("engine: function %q registered twice", fn.ID)
		}
		e.functions[fn.ID] = r
		e.order = append(e.order, fn.ID)
		if fn.OnFailure != nil {
			failure := failureFunction(fn)
			fr, err := prepare(failure)
			if err != nil {
				return err
			}
			if _, dup := e.functions[failure.ID]; dup {
				return fmt.Errorf("engine: function %q registered twice", failure.ID)
			}
			e.functions[failure.ID] = fr
			e.order = append(e.order, failure.ID)
		}
	}
	return nil
}

// failureFunction turns fn's OnFailure hook into a function triggered by
// cyberdrew/function.failed for fn.
func failureFunction(fn Function) Function {
	id := fn.ID
	return Function{
		ID:   id + "-failure",
		Name: fn.Name + " (on failure)",
		Triggers: []Trigger{{Event: EventFunctionFailed, If: func(ev store.Event) bool {
			v, ok, _ := keypath.Key(eventDoc(ev), "data.function_id")
			return ok && v == id
		}}},
		Retries: fn.Retries,
		Backoff: fn.Backoff,
		Handler: fn.OnFailure,
	}
}

func prepare(fn Function) (*registered, error) {
	where := fmt.Sprintf("engine: function %q", fn.ID)
	if fn.ID == "" || strings.ContainsAny(fn.ID, " \t\n:") {
		return nil, fmt.Errorf("%s: id must be non-empty without spaces or colons", where)
	}
	if fn.Handler == nil {
		return nil, fmt.Errorf("%s: no handler", where)
	}
	if fn.Name == "" {
		fn.Name = fn.ID
	}
	if len(fn.Triggers) == 0 {
		return nil, fmt.Errorf("%s: no triggers", where)
	}
	if fn.Retries != nil && *fn.Retries < 0 {
		return nil, fmt.Errorf("%s: retries must not be negative", where)
	}
	r := &registered{Function: fn}
	for _, t := range fn.Triggers {
		switch {
		case t.Event != "" && t.Cron != "":
			return nil, fmt.Errorf("%s: a trigger has either an event or a cron", where)
		case t.Event != "":
			p, err := wire.ParseEventPattern(t.Event)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			r.events = append(r.events, p)
			r.eventIf = append(r.eventIf, t.If)
		case t.Cron != "":
			s, err := parseCron(t.Cron)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			r.crons = append(r.crons, s)
		default:
			return nil, fmt.Errorf("%s: empty trigger", where)
		}
	}
	keys := map[string]string{"idempotency": fn.Idempotency}
	if c := fn.Concurrency; c != nil {
		if c.Limit <= 0 {
			return nil, fmt.Errorf("%s: concurrency limit must be positive", where)
		}
		keys["concurrency key"] = c.Key
	}
	if rl := fn.RateLimit; rl != nil {
		if rl.Limit <= 0 || rl.Period <= 0 {
			return nil, fmt.Errorf("%s: rate limit needs a positive limit and period", where)
		}
		keys["rate limit key"] = rl.Key
	}
	if d := fn.Debounce; d != nil {
		if d.Period <= 0 || (d.MaxWait != 0 && d.MaxWait < d.Period) {
			return nil, fmt.Errorf("%s: debounce needs a positive period and a max wait of at least the period", where)
		}
		keys["debounce key"] = d.Key
	}
	if s := fn.Singleton; s != nil {
		keys["singleton key"] = s.Key
	}
	for what, k := range keys {
		if k == "" {
			continue
		}
		if _, err := keypath.Parse(k); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", where, what, err)
		}
	}
	if fn.FinishTimeout < 0 {
		return nil, fmt.Errorf("%s: finish timeout must not be negative", where)
	}
	if fn.Retention < 0 {
		return nil, fmt.Errorf("%s: retention must not be negative", where)
	}
	return r, nil
}

func (r *registered) retries() int {
	if r.Retries == nil {
		return DefaultRetries
	}
	return *r.Retries
}

func (r *registered) backoff(retry int) time.Duration {
	if r.Backoff != nil {
		return r.Backoff(retry)
	}
	return InngestBackoff(retry)
}

func (r *registered) matches(ev store.Event) bool {
	if r.Disabled != "" {
		return false
	}
	for i, p := range r.events {
		if p.Match(ev.Name) && (r.eventIf[i] == nil || r.eventIf[i](ev)) {
			return true
		}
	}
	return false
}

func (e *Engine) function(id string) (*registered, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.functions[id]
	return r, ok
}

// Functions lists the registry in registration order with its counters.
func (e *Engine) Functions() []FunctionInfo {
	e.mu.RLock()
	defer e.mu.RUnlock()
	now := e.clock.Now()
	out := make([]FunctionInfo, 0, len(e.order))
	for _, id := range e.order {
		r := e.functions[id]
		info := FunctionInfo{Function: r.Function, Stats: e.stats.read(id, now)}
		if r.Disabled == "" {
			for _, c := range r.crons {
				if n := c.next(now); info.NextCron.IsZero() || n.Before(info.NextCron) {
					info.NextCron = n
				}
			}
		}
		out = append(out, info)
	}
	return out
}

// idSource mints an engine's ULIDs (events, runs, worker owners) from a
// monotonic entropy source of its own, seeded from crypto/rand. Ids it mints
// in the same millisecond increase in the order it mints them, whatever other
// engines in the process do on other clocks: the queue claims runs that
// become available at the same moment in id order, so an engine's runs start
// in the order it created them.
type idSource struct {
	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
}

// newID returns a ULID for time t, greater than every id the engine minted
// before for the same millisecond.
func (e *Engine) newID(t time.Time) string {
	e.ids.mu.Lock()
	defer e.ids.mu.Unlock()
	return ulid.MustNew(ulid.Timestamp(t), e.ids.entropy).String()
}

// place gives pub's ids the partition they belong to on a partitioned
// store (store.Publication.Partition): every run in its event's
// partition, and all in partition 0 when flow control decides on one of
// its runs or it has a client id (store.Publication.Pinned). home is the partition an unpinned
// publication goes to (a step's emits go to their run's), -1 for the one
// its event id is in. An event id the engine minted is minted again until
// it is in its partition (and a debounce key made of it follows it); one
// given (IncomingEvent.InternalID, derived from a client's seed, which a
// retried request derives again) gets the partition's digit as its last
// character, which Engine.SeededIDs leaves the same for every event of a
// request.
// On a store that is not partitioned it does nothing.
func (e *Engine) place(pub *store.Publication, home int, given bool) {
	n := e.partitions
	if n <= 1 {
		return
	}
	part := home
	if pub.Pinned() {
		part = 0
	}
	if part < 0 {
		part = store.PartitionOf(pub.Event.ID, n)
	}
	if store.PartitionOf(pub.Event.ID, n) != part {
		old := pub.Event
		if given {
			pub.Event.ID = store.WithPartition(old.ID, part)
		} else {
			pub.Event.ID = e.newIDIn(old.ReceivedAt, part)
		}
		for i := range pub.Runs {
			if s := &pub.Runs[i]; s.DebounceKey == ownKey(s.FunctionID, old) {
				s.DebounceKey = ownKey(s.FunctionID, pub.Event)
			}
		}
	}
	for i := range pub.Runs {
		e.placeRun(&pub.Runs[i], part)
	}
}

// placeRun mints s's id again, until it is in partition part, when it is
// not there already.
func (e *Engine) placeRun(s *store.RunSpec, part int) {
	if store.PartitionOf(s.ID, e.partitions) != part {
		s.ID = e.newIDIn(e.clock.Now(), part)
	}
}

// newIDIn returns a ULID for time t, as newID, in partition part of the
// engine's store.
func (e *Engine) newIDIn(t time.Time, part int) string {
	id, _ := store.MintIn(part, e.partitions, func() string { return e.newID(t) })
	return id
}

// eventDoc is the JSON an event's key paths are evaluated against.
func eventDoc(ev store.Event) []byte {
	doc, _ := json.Marshal(struct {
		ID   string          `json:"id"`
		Name string          `json:"name"`
		Data json.RawMessage `json:"data"`
		User json.RawMessage `json:"user,omitempty"`
		TS   int64           `json:"ts"`
	}{ev.PublicID(), ev.Name, ev.Data, ev.User, ev.TS})
	return doc
}

// Publish accepts events from outside: it validates the whole batch, then
// stores every event with the runs it triggers, atomically and durably.
func (e *Engine) Publish(ctx context.Context, evs []IncomingEvent) ([]Accepted, error) {
	for i, ev := range evs {
		if err := checkIncoming(i, ev); err != nil {
			return nil, err
		}
		if p := ReservedPrefix(ev.Name); p != "" {
			return nil, &ValidationError{Index: i, Field: "name", Reason: fmt.Sprintf("the %q prefix is reserved", p)}
		}
		if e.validate != nil {
			if err := e.validate(i, ev); err != nil {
				return nil, err
			}
		}
	}
	return e.publish(ctx, evs)
}

func checkIncoming(i int, ev IncomingEvent) error {
	if strings.TrimSpace(ev.Name) == "" {
		return &ValidationError{Index: i, Field: "name", Reason: "is required"}
	}
	if ev.TS < 0 {
		return &ValidationError{Index: i, Field: "ts", Reason: "must not be negative"}
	}
	return nil
}

// publish stores events without the reserved-name check (internal events).
//
// When the engine's worker pool has idle workers and nothing claimable
// waits for them, the runs that may start at once are leased to it in
// the same atomic write (store.RunSpec.LeaseTo) and start without a
// claim: one durable write and one round trip fewer per run, and no wait
// for the change feed. The pool reserves its idle workers first, so a
// lease the store grants always has one.
func (e *Engine) publish(ctx context.Context, evs []IncomingEvent) ([]Accepted, error) {
	pubs := make([]store.Publication, len(evs))
	for i, in := range evs {
		pubs[i] = e.publication(in)
	}
	var (
		res []store.Published
		err error
	)
	if pool, reserved := e.reserveLocal(pubs); reserved > 0 {
		res, err = e.publishLeasing(ctx, pubs, pool, reserved)
	} else {
		res, err = e.store.Publish(ctx, pubs)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: publish: %w", err)
	}
	e.queuedHere(pubs, res)
	out := make([]Accepted, len(res))
	for i, r := range res {
		e.observeSkips(r.Runs)
		out[i] = Accepted{EventID: r.EventID, Duplicate: r.Duplicate, Runs: r.Runs}
	}
	return out, nil
}

// publishLeasing stores pubs, some of whose runs ask for a lease to pool,
// and hands the leases the store granted to pool's reserved workers,
// giving back the other reservations. The store call is seen through
// (bounded by storeCallTimeout) even when ctx ends first, as the caller
// then stops waiting: the store may still grant the leases, and a lease
// without a worker would hold its run until it lapsed.
func (e *Engine) publishLeasing(ctx context.Context, pubs []store.Publication, pool *WorkerPool, reserved int) ([]store.Published, error) {
	type result struct {
		res []store.Published
		err error
	}
	done := make(chan result, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
		defer cancel()
		res, err := e.store.Publish(sctx, pubs)
		granted := 0
		for _, r := range res {
			for i, ref := range r.Runs {
				if ref.Lease != nil {
					pool.take(ref.Lease)
					r.Runs[i].Lease = nil
					granted++
				}
			}
		}
		if reserved > granted {
			pool.unreserve(reserved - granted)
		}
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// queuedHere tells the engine's pool when pubs (stored as res) left a run
// queued that may start now (WorkerPool.queuedLocally), so that a later
// publication is not leased to it ahead of that run.
func (e *Engine) queuedHere(pubs []store.Publication, res []store.Published) {
	pool := e.local.Load()
	if pool == nil {
		return
	}
	now := e.clock.Now()
	for i, r := range res {
		for j, ref := range r.Runs {
			if ref.Status != store.StatusQueued || ref.Lease != nil || ref.Existing || i >= len(pubs) || j >= len(pubs[i].Runs) {
				continue
			}
			if pubs[i].Runs[j].Leasable(now) {
				pool.queuedLocally()
				return
			}
		}
	}
}

// reserveLocal reserves idle workers of the engine's pool for the runs of
// pubs that may start now, and asks the store to lease that many of them
// to it; it returns the pool and how many it reserved.
func (e *Engine) reserveLocal(pubs []store.Publication) (*WorkerPool, int) {
	pool := e.local.Load()
	if pool == nil {
		return nil, 0
	}
	now := e.clock.Now()
	var leasable []*store.RunSpec
	for i := range pubs {
		for j := range pubs[i].Runs {
			if s := &pubs[i].Runs[j]; s.Leasable(now) {
				leasable = append(leasable, s)
			}
		}
	}
	if len(leasable) == 0 {
		return pool, 0
	}
	reserved := pool.reserve(len(leasable))
	for _, s := range leasable[:reserved] {
		s.LeaseTo = store.LeaseRequest{Owner: pool.opts.Owner, TTL: pool.opts.LeaseTTL}
	}
	return pool, reserved
}

// observeSkips tells the observer of every run ref that says its event
// started no run of its own. Each skip is counted once, by the engine that
// published the event.
func (e *Engine) observeSkips(refs []store.RunRef) {
	for _, r := range refs {
		if r.Skip != "" {
			e.observe.RunSkipped(r.FunctionID, string(r.Skip))
		}
	}
}

// publication builds the stored event and the runs it triggers.
func (e *Engine) publication(in IncomingEvent) store.Publication {
	now := e.clock.Now()
	data := in.Data
	if len(data) == 0 || string(data) == "null" {
		data = json.RawMessage(`{}`)
	}
	ts := in.TS
	if ts == 0 {
		ts = now.UnixMilli()
	}
	id := in.InternalID
	if id == "" {
		id = e.newID(now)
	}
	ev := store.Event{
		ID: id, ClientID: in.ID, Name: in.Name, Data: data, User: in.User,
		TS: ts, Version: in.V, ReceivedAt: now,
	}
	pub := store.Publication{Event: ev, ClientIDTTL: eventIDTTL, Runs: e.triggered(ev)}
	e.place(&pub, -1, in.InternalID != "")
	if len(pub.Runs) > 0 {
		// The event's first run shares its id (in its partition, after
		// place): the Redis store keeps such a run in its event while it is
		// queued (store.RunSpec.ID).
		pub.Runs[0].ID = pub.Event.ID
	}
	return pub
}

// triggered returns a run spec for every enabled function whose event
// trigger matches ev.
func (e *Engine) triggered(ev store.Event) []store.RunSpec {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var specs []store.RunSpec
	for _, id := range e.order {
		if r := e.functions[id]; r.matches(ev) {
			specs = append(specs, e.spec(r, ev, true))
		}
	}
	return specs
}

// spec evaluates a function's flow-control keys against ev. withKeys false
// (rerun, invoke) leaves out idempotency and debounce, which would fold the
// new run into an old one.
//
// An event without a value at a key's path (absent, null or "", see
// keypath.Lookup) never folds into another event's run: it has no
// idempotency key, and its debounce key is its own. The limiting keys
// (concurrency, rate limit, singleton) put it in the function-wide bucket,
// so the limit still holds. docs/engine.md ("Flow control") has the table.
func (e *Engine) spec(r *registered, ev store.Event, withKeys bool) store.RunSpec {
	now := e.clock.Now()
	// The event's JSON is built for the first key only: most functions
	// have none.
	var doc []byte
	key := func(path string) (string, bool) {
		if path == "" {
			return "", false
		}
		if doc == nil {
			doc = eventDoc(ev)
		}
		v, ok, _ := keypath.Key(doc, path)
		return v, ok
	}
	// shared is a limiting key: the value's bucket, else the function's.
	shared := func(path string) string {
		if v, ok := key(path); ok {
			return r.ID + ":" + v
		}
		return r.ID
	}
	s := store.RunSpec{ID: e.newID(now), FunctionID: r.ID, FinishTimeout: r.FinishTimeout}
	if at := time.UnixMilli(ev.TS); at.After(now) {
		s.AvailableAt = at
	}
	if c := r.Concurrency; c != nil {
		s.ConcurrencyKey, s.ConcurrencyLimit = shared(c.Key), c.Limit
	}
	if rl := r.RateLimit; rl != nil {
		s.RateLimitKey, s.RateLimit, s.RateLimitPeriod = shared(rl.Key), rl.Limit, rl.Period
	}
	if sg := r.Singleton; sg != nil {
		s.SingletonKey = shared(sg.Key)
	}
	if !withKeys {
		return s
	}
	if v, ok := key(r.Idempotency); ok {
		s.IdempotencyKey, s.IdempotencyTTL = "fn:"+r.ID+":"+v, idempotencyTTL
	}
	if d := r.Debounce; d != nil {
		s.DebounceKey, s.DebouncePeriod, s.DebounceMaxWait = shared(d.Key), d.Period, d.MaxWait
		if d.Key != "" {
			if _, ok := key(d.Key); !ok {
				s.DebounceKey = ownKey(r.ID, ev)
			}
		}
	}
	return s
}

// ownKey is the debounce key of an event without a value at the key's
// path: the function id and the event's internal id (a ULID) joined by a
// space. It has a space and no colon, unlike every function-wide key (a
// function id has neither) and every "<function>:<value>" key, so no other
// event shares it.
func ownKey(functionID string, ev store.Event) string {
	return functionID + " " + ev.ID
}

// Invoke starts one run of a function with data as its event's data,
// bypassing its triggers (but not its concurrency, rate limit or singleton).
func (e *Engine) Invoke(ctx context.Context, functionID string, data json.RawMessage) (Accepted, error) {
	r, ok := e.function(functionID)
	if !ok {
		return Accepted{}, fmt.Errorf("engine: invoke %q: %w", functionID, ErrUnknownFunction)
	}
	if r.Disabled != "" {
		return Accepted{}, fmt.Errorf("engine: invoke: %w", &DisabledError{FunctionID: functionID, Reason: r.Disabled})
	}
	pub := e.publication(IncomingEvent{Name: EventFunctionInvoked, Data: data})
	pub.Runs = []store.RunSpec{e.spec(r, pub.Event, false)}
	e.place(&pub, -1, false)
	res, err := e.store.Publish(ctx, []store.Publication{pub})
	if err != nil {
		return Accepted{}, fmt.Errorf("engine: invoke %q: %w", functionID, err)
	}
	e.observeSkips(res[0].Runs)
	return Accepted{EventID: res[0].EventID, Runs: res[0].Runs}, nil
}

// Rerun starts a new run of a run's function with the same trigger event.
func (e *Engine) Rerun(ctx context.Context, runID string) (store.RunRef, error) {
	old, err := e.store.GetRun(ctx, runID)
	if err != nil {
		return store.RunRef{}, fmt.Errorf("engine: rerun %s: %w", runID, err)
	}
	r, ok := e.function(old.FunctionID)
	if !ok {
		return store.RunRef{}, fmt.Errorf("engine: rerun %s: %w: %s", runID, ErrUnknownFunction, old.FunctionID)
	}
	ev, err := e.store.GetEvent(ctx, old.EventID)
	if errors.Is(err, store.ErrNotFound) {
		// Not the run's own ErrNotFound: the run is there.
		return store.RunRef{}, fmt.Errorf("engine: rerun %s: %w (event %s, deleted by retention)", runID, ErrEventGone, old.EventID)
	}
	if err != nil {
		return store.RunRef{}, fmt.Errorf("engine: rerun %s: trigger event: %w", runID, err)
	}
	spec := e.spec(r, ev, false)
	spec.AvailableAt = time.Time{}
	if n := e.partitions; n > 1 {
		// The run goes with its event, unless flow control decides on it
		// (store.Publication.Pinned): one server copes with the two apart,
		// a partitioned Redis Cluster refuses them (store.ErrInvalid).
		part := store.PartitionOf(ev.ID, n)
		if spec.FlowControlled() {
			part = 0
		}
		e.placeRun(&spec, part)
	}
	refs, err := e.store.CreateRuns(ctx, ev.ID, []store.RunSpec{spec})
	if err != nil {
		return store.RunRef{}, fmt.Errorf("engine: rerun %s: %w", runID, err)
	}
	e.observeSkips(refs)
	return refs[0], nil
}

// Cancel cancels a run; a worker executing it stops at its next step.
func (e *Engine) Cancel(ctx context.Context, runID string) (store.Run, error) {
	run, err := e.store.CancelRun(ctx, runID, "cancelled")
	if err != nil {
		return store.Run{}, fmt.Errorf("engine: cancel %s: %w", runID, err)
	}
	return run, nil
}

// Start keeps the per-function counters from the store's change stream.
func (e *Engine) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.stopStats, e.statsDone = cancel, make(chan struct{})
	changes := e.store.Subscribe(ctx)
	go func() {
		defer close(e.statsDone)
		e.watchStats(changes)
	}()
	return nil
}

// Stop stops the counters.
func (e *Engine) Stop(ctx context.Context) error {
	if e.stopStats == nil {
		return nil
	}
	e.stopStats()
	select {
	case <-e.statsDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
