// Package storetest is the conformance suite every store.Store backend must
// pass: the same tests for SQLite and Redis, not similar ones. A backend's own
// test calls Run with a function that opens a fresh, empty store driven by the
// given fake clock:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
//			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"), sqlite.Options{Clock: clock})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Behaviour changes start here: change the suite first, then the backends.
// Where store.go leaves a point open, the case that pins it says so in a
// comment starting with "Decision:".
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// opener is the type of Run's open argument.
type opener = func(t *testing.T, clock *clockwork.FakeClock) store.Store

// start is the fixed instant every case's fake clock starts at.
var start = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testCase is one conformance case; it gets a fresh store in b.
type testCase struct {
	name string
	fn   func(t *testing.T, b *bundle)
}

// Run runs the whole conformance suite against the backend open returns.
// Every case opens its own store with its own fake clock and runs in parallel
// with the others.
//
// open must return a fresh, empty store whose notion of now is clock, and
// arrange for it to be closed when t ends (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T, clock *clockwork.FakeClock) store.Store) {
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Basics", basicCases},
		{"Events", eventCases},
		{"Runs", runCases},
		{"FlowControl", flowCases},
		{"Queue", queueCases},
		{"Steps", stepCases},
		{"Wait", waitCases},
		{"Subscribe", subscribeCases},
		{"Prune", pruneCases},
		{"KV", kvCases},
		{"Effects", effectCases},
		{"Concurrency", concurrencyCases},
		{"BackendsAgree", agreeCases},
		{"Partitions", partitionCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.fn(t, setup(t, open))
				})
			}
		})
	}
}

// bundle is what every case works with.
type bundle struct {
	store store.Store
	clock *clockwork.FakeClock
	ctx   context.Context

	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
	// On a partitioned store (store.Store.Partitions) every id the bundle
	// mints is in partition part of parts, so that each publication's
	// event and runs share one; the cases' bundles take the partitions in
	// turn, and the Partitions cases move between them.
	part, parts int
}

// nextPart is the partition the next case's bundle starts in.
var nextPart atomic.Int64

func setup(t *testing.T, open opener) *bundle {
	t.Helper()
	clock := clockwork.NewFakeClockAt(start)
	st := open(t, clock)
	n := st.Partitions()
	return &bundle{
		store:   st,
		clock:   clock,
		ctx:     t.Context(),
		entropy: ulid.Monotonic(rand.Reader, 0),
		part:    int(nextPart.Add(1) % int64(n)),
		parts:   n,
	}
}

// id returns a new ULID at the fake clock's time, in the bundle's
// partition. Ids made by one bundle increase strictly, in the order they
// were made.
func (b *bundle) id() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := store.MintIn(b.part, b.parts, func() string {
		return ulid.MustNew(ulid.Timestamp(b.clock.Now()), b.entropy).String()
	})
	if !ok {
		panic("storetest: no id in partition " + strconv.Itoa(b.part))
	}
	return id
}

// inPartition has the bundle mint its ids in partition p (mod the
// store's partitions) from now on.
func (b *bundle) inPartition(p int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.part = p % b.parts
}

// slotted reports whether the store keeps its partitions in hash slots of
// their own on a Redis Cluster (a store with Cluster() true and several
// partitions), where no script reaches across partitions: a run created
// apart from its event is refused, and a step's effects on the site's keys
// commit ahead of its record (docs/engine.md, "Spreading the engine over
// slots").
func (b *bundle) slotted() bool {
	c, ok := b.store.(interface{ Cluster() bool })
	return ok && c.Cluster() && b.parts > 1
}

// effectsAhead reports whether the store commits a step's KV effects
// ahead of its record (EffectsAhead() true: a partitioned Redis store on a
// Cluster): a commit refused for a lost lease may have applied them, and
// the step's next commit adopts them (store.ErrSuperseded).
func (b *bundle) effectsAhead() bool {
	a, ok := b.store.(interface{ EffectsAhead() bool })
	return ok && a.EffectsAhead()
}

// pinned runs a case whose publications have client ids or flow control
// with its ids in partition 0, where a partitioned store keeps them
// (store.Publication.Pinned).
func pinned(fn func(t *testing.T, b *bundle)) func(t *testing.T, b *bundle) {
	return func(t *testing.T, b *bundle) {
		b.inPartition(0)
		fn(t, b)
	}
}

func (b *bundle) now() time.Time { return b.clock.Now() }

// event returns an event named name with data (JSON), its ts the clock's now.
func (b *bundle) event(name, data string) store.Event {
	return store.Event{
		ID:   b.id(),
		Name: name,
		Data: json.RawMessage(data),
		TS:   b.now().UnixMilli(),
	}
}

// spec returns a plain run spec for function fn.
func (b *bundle) spec(fn string) store.RunSpec {
	return store.RunSpec{ID: b.id(), FunctionID: fn}
}

// publish publishes pubs and fails the test on error.
func (b *bundle) publish(t *testing.T, pubs ...store.Publication) []store.Published {
	t.Helper()
	got, err := b.store.Publish(b.ctx, pubs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if len(got) != len(pubs) {
		t.Fatalf("Publish returned %d results for %d publications", len(got), len(pubs))
	}
	return got
}

// publishOne publishes ev with specs and returns what became of it.
func (b *bundle) publishOne(t *testing.T, ev store.Event, specs ...store.RunSpec) store.Published {
	t.Helper()
	return b.publish(t, store.Publication{Event: ev, Runs: specs})[0]
}

// enqueue publishes one event triggering specs and returns the run refs.
// The event takes its first run's id, as the engine gives an event's first
// run the event's id (store.RunSpec.ID): the usual run of a store, which
// the Redis store keeps in its event while it is queued.
func (b *bundle) enqueue(t *testing.T, specs ...store.RunSpec) []store.RunRef {
	t.Helper()
	ev := b.event("test/enqueue", `{}`)
	if len(specs) > 0 {
		ev.ID = specs[0].ID
	}
	p := b.publishOne(t, ev, specs...)
	if len(p.Runs) != len(specs) {
		t.Fatalf("Publish returned %d run refs for %d specs", len(p.Runs), len(specs))
	}
	return p.Runs
}

// enqueueOne enqueues a plain run of function fn and returns its id.
func (b *bundle) enqueueOne(t *testing.T, fn string) string {
	t.Helper()
	return b.enqueue(t, b.spec(fn))[0].ID
}

func (b *bundle) claim(t *testing.T, owner string, n int, ttl time.Duration) []store.Lease {
	t.Helper()
	ls, err := b.store.Claim(b.ctx, owner, n, ttl)
	if err != nil {
		t.Fatalf("Claim(%q, %d): %v", owner, n, err)
	}
	return ls
}

// claimOne claims and expects exactly the run id.
func (b *bundle) claimOne(t *testing.T, owner, id string, ttl time.Duration) *store.Lease {
	t.Helper()
	ls := b.claim(t, owner, 10, ttl)
	if got := leaseIDs(ls); !slices.Equal(got, []string{id}) {
		t.Fatalf("Claim(%q) = %v, want [%s]", owner, got, id)
	}
	return &ls[0]
}

// claimNone expects nothing claimable.
func (b *bundle) claimNone(t *testing.T, owner string) {
	t.Helper()
	if ls := b.claim(t, owner, 100, time.Minute); len(ls) != 0 {
		t.Fatalf("Claim(%q) = %v, want nothing claimable", owner, leaseIDs(ls))
	}
}

func (b *bundle) getRun(t *testing.T, id string) store.Run {
	t.Helper()
	r, err := b.store.GetRun(b.ctx, id)
	if err != nil {
		t.Fatalf("GetRun(%s): %v", id, err)
	}
	return r
}

func (b *bundle) getEvent(t *testing.T, id string) store.Event {
	t.Helper()
	e, err := b.store.GetEvent(b.ctx, id)
	if err != nil {
		t.Fatalf("GetEvent(%s): %v", id, err)
	}
	return e
}

func (b *bundle) steps(t *testing.T, runID string) []store.Step {
	t.Helper()
	s, err := b.store.Steps(b.ctx, runID)
	if err != nil {
		t.Fatalf("Steps(%s): %v", runID, err)
	}
	return s
}

func (b *bundle) listRuns(t *testing.T, f store.RunFilter) store.Page[store.Run] {
	t.Helper()
	p, err := b.store.ListRuns(b.ctx, f)
	if err != nil {
		t.Fatalf("ListRuns(%+v): %v", f, err)
	}
	return p
}

func (b *bundle) listEvents(t *testing.T, f store.EventFilter) store.Page[store.Event] {
	t.Helper()
	p, err := b.store.ListEvents(b.ctx, f)
	if err != nil {
		t.Fatalf("ListEvents(%+v): %v", f, err)
	}
	return p
}

func (b *bundle) finish(t *testing.T, l *store.Lease, o store.Outcome) {
	t.Helper()
	if err := b.store.Finish(b.ctx, l, o); err != nil {
		t.Fatalf("Finish(%s): %v", l.RunID, err)
	}
}

// complete claims and finishes the run id as Completed.
func (b *bundle) complete(t *testing.T, id string) {
	t.Helper()
	l := b.claimOne(t, "finisher", id, time.Minute)
	b.finish(t, l, store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`null`)})
}

// allRuns pages through ListRuns with f and returns every run, in order.
func (b *bundle) allRuns(t *testing.T, f store.RunFilter) []store.Run {
	t.Helper()
	var all []store.Run
	for range 10000 {
		p := b.listRuns(t, f)
		all = append(all, p.Items...)
		if p.Cursor == "" {
			return all
		}
		f.Cursor = p.Cursor
	}
	t.Fatalf("ListRuns(%+v) did not end", f)
	return nil
}

// allEvents pages through ListEvents with f and returns every event, in order.
func (b *bundle) allEvents(t *testing.T, f store.EventFilter) []store.Event {
	t.Helper()
	var all []store.Event
	for range 10000 {
		p := b.listEvents(t, f)
		all = append(all, p.Items...)
		if p.Cursor == "" {
			return all
		}
		f.Cursor = p.Cursor
	}
	t.Fatalf("ListEvents(%+v) did not end", f)
	return nil
}

// Assertions. One style: t.Errorf/t.Fatalf with got and want.

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, fmtTime(got), fmtTime(want))
	}
}

func fmtTime(tm time.Time) string {
	if tm.IsZero() {
		return "zero time"
	}
	return tm.UTC().Format(time.RFC3339Nano)
}

func checkEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func checkIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// checkJSON compares two JSON documents by value (formatting ignored).
func checkJSON(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !jsonEqual(got, want) {
		t.Errorf("%s = %s, want %s", what, got, want)
	}
}

func jsonEqual(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func leaseIDs(ls []store.Lease) []string {
	ids := make([]string, len(ls))
	for i, l := range ls {
		ids[i] = l.RunID
	}
	return ids
}

func runIDs(rs []store.Run) []string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return ids
}

func eventIDs(es []store.Event) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

func refIDs(rs []store.RunRef) []string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return ids
}

// reversed returns a reversed copy of ids.
func reversed(ids []string) []string {
	r := slices.Clone(ids)
	slices.Reverse(r)
	return r
}

// checkRef compares a RunRef field by field.
func checkRef(t *testing.T, what string, got, want store.RunRef) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
}
