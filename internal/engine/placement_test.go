package engine_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// TestSeededRequestRetriedStoresOnce: an official client's request (its
// events' ids derived from its seed header) sent twice, as a client
// retries it, stores its events once and starts their runs once, on
// every backend: on a partitioned one the ids of a publication flow
// control decides on are moved to partition 0 the same way both times.
func TestSeededRequestRetriedStoresOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{noPool: true},
			engine.Function{ID: "plain", Triggers: []engine.Trigger{{Event: "test/seeded"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil }},
			engine.Function{ID: "keyed", Triggers: []engine.Trigger{{Event: "test/keyed"}}, Idempotency: "event.data.k",
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil }},
		)
		seed := "1767225600000," + base64.StdEncoding.EncodeToString([]byte("0123456789"))
		request := func() []engine.Accepted {
			ids := b.eng.SeededIDs(seed, 4)
			evs := []engine.IncomingEvent{
				{Name: "test/seeded", Data: json.RawMessage(`{"n":1}`)},
				{Name: "test/keyed", Data: json.RawMessage(`{"k":"a"}`)},
				{Name: "test/seeded", Data: json.RawMessage(`{"n":2}`)},
				{Name: "test/keyed", Data: json.RawMessage(`{"k":"b"}`)},
			}
			for i := range evs {
				evs[i].InternalID = ids[i]
			}
			acc, err := b.eng.Publish(b.ctx, evs)
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			return acc
		}
		first, again := request(), request()
		seen := map[string]bool{}
		for i := range first {
			if first[i].Duplicate || len(first[i].Runs) != 1 {
				t.Fatalf("event %d first: %+v, want stored with one run", i, first[i])
			}
			if !again[i].Duplicate || again[i].EventID != first[i].EventID || len(again[i].Runs) != 0 {
				t.Errorf("event %d again: %+v, want a duplicate of %s without runs", i, again[i], first[i].EventID)
			}
			if seen[first[i].EventID] {
				t.Errorf("event %d has the id of an earlier one, %s", i, first[i].EventID)
			}
			seen[first[i].EventID] = true
			if run := b.run(t, first[i].Runs[0].ID); run.EventID != first[i].EventID {
				t.Errorf("event %d's run has event %s, want %s", i, run.EventID, first[i].EventID)
			}
		}
		runs, err := b.st.ListRuns(b.ctx, store.RunFilter{})
		if err != nil || len(runs.Items) != 4 {
			t.Errorf("ListRuns = %d runs, %v; want 4", len(runs.Items), err)
		}
	})
}

// lostFirstEmit is a store whose first step commit of each run that emits
// is sent with a stale lease, as a daemon whose lease lapsed sends it: the
// store refuses it (store.ErrLeaseLost), after storing ahead whatever it
// stores ahead of a commit.
type lostFirstEmit struct {
	store.Store
	mu   sync.Mutex
	lost map[string]bool
}

func (s *lostFirstEmit) stale(l *store.Lease, emits bool) *store.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !emits || s.lost[l.RunID] {
		return l
	}
	s.lost[l.RunID] = true
	c := *l
	c.Token = "stale"
	return &c
}

func (s *lostFirstEmit) SaveStep(ctx context.Context, l *store.Lease, st store.Step, emit []store.Publication) error {
	return s.Store.SaveStep(ctx, s.stale(l, len(emit) > 0), st, emit)
}

func (s *lostFirstEmit) CommitSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit) error {
	emits := false
	for _, sc := range steps {
		emits = emits || len(sc.Emit) > 0
	}
	return s.Store.CommitSteps(ctx, s.stale(l, emits), steps)
}

// TestSendEventAfterALostCommitSendsOnce: a step that sends an event to a
// function with flow control, whose first commit is refused (the lease
// lapsed), sends it once when the run is taken over and the step executes
// again, on every backend. On a partitioned store the event is stored in
// partition 0 ahead of the commit in its run's; the step executed again
// derives the same id, so the second is a duplicate.
func TestSendEventAfterALostCommitSendsOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		const runs = 12 // some runs outside partition 0 on a partitioned store, almost surely
		b := setup(t, be, options{leaseTTL: time.Minute, wrap: func(st store.Store) store.Store {
			return &lostFirstEmit{Store: st, lost: map[string]bool{}}
		}},
			engine.Function{ID: "emitter", Triggers: []engine.Trigger{{Event: "test/emit"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					_, err := r.SendEvent(ctx, "tell", engine.IncomingEvent{Name: "test/told", Data: r.Event.Data})
					return nil, err
				}},
			engine.Function{ID: "told", Triggers: []engine.Trigger{{Event: "test/told"}},
				Concurrency: &engine.Concurrency{Limit: 100},
				Handler:     func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil }},
		)
		for i := range runs {
			b.send(t, "test/emit", fmt.Sprintf(`{"n":%d}`, i))
		}
		// The refused commits' leases lapse as the clock moves on, a minute
		// at a time once the runs are quiet (no change for 50 ms): when
		// every run waits for a lease to lapse, no change comes, and a wait
		// that moved the clock only on a change stopped it there (under
		// -race, as a rule); moving it while a run executes would take its
		// lease (of a minute) from under it.
		deadline := time.Now().Add(20 * time.Second)
		for {
			p, err := b.st.ListRuns(b.ctx, store.RunFilter{FunctionID: "emitter", Statuses: []store.Status{store.StatusCompleted}})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Items) == runs {
				break
			}
			if time.Now().After(deadline) {
				all, _ := b.st.ListRuns(b.ctx, store.RunFilter{})
				for _, r := range all.Items {
					t.Logf("at %v: run %+v", b.clock.Now(), r)
				}
				t.Fatalf("%d of %d emitters completed", len(p.Items), runs)
			}
			select {
			case <-b.changes:
			case <-time.After(50 * time.Millisecond):
				b.clock.Advance(time.Minute)
			}
		}
		evs, err := b.st.ListEvents(b.ctx, store.EventFilter{Name: "test/told", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs.Items) != runs {
			t.Errorf("%d test/told events stored, want %d: one per emitter", len(evs.Items), runs)
		}
	})
}
