package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
)

// The cases of effects committed ahead of their record (ahead.go) that
// the conformance suite, the same for every store, does not reach: a
// receipt adopted by a commit of another shape, a finish dropped with
// its failure event, how long a receipt is kept. They run on one server
// with the ahead path forced (redis.CommitEffectsAhead), as on a
// partitioned cluster.

// aheadStore is a partitioned store that commits effects ahead, on the
// fake clock, with a client of its server's database.
func aheadStore(t *testing.T) (*redis.Store, *clockwork.FakeClock, *goredis.Client) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := server(t)
	s := openWith(t, srv.URL(11), redis.Options{Clock: clock, Partitions: 3})
	redis.CommitEffectsAhead(s)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 11})
	t.Cleanup(func() { c.Close() })
	return s, clock, c
}

// aheadRun publishes a run of fn in partition part (of 3) and returns its id.
func aheadRun(t *testing.T, s *redis.Store, part int) string {
	t.Helper()
	mint := func() string { return ulid.Make().String() }
	ev, _ := store.MintIn(part, 3, mint)
	id, _ := store.MintIn(part, 3, mint)
	if _, err := s.Publish(t.Context(), []store.Publication{{Event: store.Event{ID: ev, Name: "app/x", Data: json.RawMessage(`{}`)},
		Runs: []store.RunSpec{{ID: id, FunctionID: "fn"}}}}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return id
}

// leaseOf claims for owner until it holds run id.
func leaseOf(t *testing.T, s *redis.Store, owner, id string) *store.Lease {
	t.Helper()
	ls, err := s.Claim(t.Context(), owner, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ls {
		if ls[i].RunID == id {
			return &ls[i]
		}
	}
	t.Fatalf("claim by %s = %v, want run %s", owner, ls, id)
	return nil
}

func doneStep(c clockwork.Clock, id, out string) store.Step {
	now := c.Now()
	return store.Step{ID: id, Name: id, Kind: store.StepRun, Status: store.StatusCompleted,
		Output: json.RawMessage(out), StartedAt: now, EndedAt: now, Attempts: []store.Attempt{{StartedAt: now, EndedAt: now}}}
}

// TestCountedReceiptAdoptedByAnotherCommit: a counted commit
// (CommitStepsCount of [flag, count]) applies ahead and loses its lease;
// the new owner read the flag it set and took another path, so its commit
// starting with the same step is not counted (CommitSteps, or a Finish
// with steps). It records the receipt's steps with the value the count
// left, not the count's placeholder.
func TestCountedReceiptAdoptedByAnotherCommit(t *testing.T) {
	for _, via := range []string{"CommitSteps", "Finish"} {
		t.Run(via, func(t *testing.T) {
			s, clock, _ := aheadStore(t)
			ctx := context.Background()
			id := aheadRun(t, s, 1)
			l1 := leaseOf(t, s, "w1", id)
			set, incr := store.NewTx(s), store.NewTx(s)
			if err := set.Set(ctx, "flag", "1", 0); err != nil {
				t.Fatal(err)
			}
			if err := incr.IncrByBlind(ctx, "views", 1, 0); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Minute)
			l2 := leaseOf(t, s, "w2", id)
			if _, err := s.CommitStepsCount(ctx, l1, []store.StepCommit{
				{Step: doneStep(clock, "flag", `true`), Effects: set.Effects()},
				{Step: doneStep(clock, "count", `0`), Effects: incr.Effects()},
			}); !errors.Is(err, store.ErrLeaseLost) {
				t.Fatalf("the first worker's count = %v, want lease lost", err)
			}
			read := store.NewTx(s)
			if v, err := read.Get(ctx, "flag"); err != nil || v != "1" {
				t.Fatalf("Get(flag) = %q, %v", v, err)
			}
			steps := []store.StepCommit{{Step: doneStep(clock, "flag", `false`), Effects: read.Effects()}}
			var err error
			if via == "CommitSteps" {
				err = s.CommitSteps(ctx, l2, steps)
			} else {
				err = s.Finish(ctx, l2, store.Outcome{Status: store.StatusCompleted, Steps: steps})
			}
			if !errors.Is(err, store.ErrSuperseded) {
				t.Fatalf("the new owner's commit = %v, want superseded", err)
			}
			got, err := s.Steps(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || string(got[0].Output) != "true" || string(got[1].Output) != "1" {
				t.Fatalf("recorded steps = %+v; want flag true and count 1, the first worker's", got)
			}
		})
	}
}

// TestSupersededFinishPublishesNothing: a finish with steps that finds
// their effects applied by an earlier commit is dropped, and so is the
// failure event it would have published in partition 0: the run,
// executed again from the first execution's steps, completes without one.
func TestSupersededFinishPublishesNothing(t *testing.T) {
	s, clock, _ := aheadStore(t)
	ctx := context.Background()
	id := aheadRun(t, s, 1)
	l1 := leaseOf(t, s, "w1", id)
	set := store.NewTx(s)
	if err := set.Set(ctx, "flag", "1", 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	l2 := leaseOf(t, s, "w2", id)
	if err := s.Finish(ctx, l1, store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`"ok"`),
		Steps: []store.StepCommit{{Step: doneStep(clock, "flag", `true`), Effects: set.Effects()}}}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("the first worker's finish = %v, want lease lost", err)
	}
	read := store.NewTx(s)
	if _, err := read.Get(ctx, "flag"); err != nil {
		t.Fatal(err)
	}
	failed := store.Publication{Event: store.Event{ID: store.WithPartition(ulid.Make().String(), 0), ClientID: "failed:" + id,
		Name: "cyberdrew/function.failed", Data: json.RawMessage(`{}`)}, ClientIDTTL: time.Hour}
	if err := s.Finish(ctx, l2, store.Outcome{Status: store.StatusFailed, Error: "flag already set", Emit: []store.Publication{failed},
		Steps: []store.StepCommit{{Step: doneStep(clock, "flag", `false`), Effects: read.Effects()}}}); !errors.Is(err, store.ErrSuperseded) {
		t.Fatalf("the new owner's finish = %v, want superseded", err)
	}
	if err := s.Release(ctx, l2); err != nil {
		t.Fatal(err)
	}
	l3 := leaseOf(t, s, "w3", id)
	if err := s.Finish(ctx, l3, store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`"ok"`)}); err != nil {
		t.Fatal(err)
	}
	if ev, err := s.EventByClientID(ctx, "failed:"+id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a completed run's failure event: %s, %v; want none", ev.ID, err)
	}
}

// TestReceiptKeptUntilRecorded: a receipt whose steps are not recorded
// is what tells the run's next owner, however late, that their effects
// applied: it is kept for receiptTTL (30 days). Once the steps are
// recorded, the next effects call in its slot makes it a tombstone kept
// for an hour.
func TestReceiptKeptUntilRecorded(t *testing.T) {
	s, clock, c := aheadStore(t)
	ctx := context.Background()
	id := aheadRun(t, s, 2)
	l1 := leaseOf(t, s, "w1", id)
	clock.Advance(2 * time.Minute)
	l2 := leaseOf(t, s, "w2", id)
	if err := s.CommitSteps(ctx, l1, []store.StepCommit{incrementStep(t, s, "count", "views")}); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("the first worker's commit = %v, want lease lost", err)
	}
	keys, err := c.Keys(ctx, "*receipt:*"+id+"*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("receipts = %v, %v; want one", keys, err)
	}
	if ttl := c.PTTL(ctx, keys[0]).Val(); ttl < 29*24*time.Hour {
		t.Errorf("a receipt not yet recorded expires in %v, want 30 days", ttl)
	}
	if err := s.CommitSteps(ctx, l2, []store.StepCommit{incrementStep(t, s, "count", "views")}); !errors.Is(err, store.ErrSuperseded) {
		t.Fatalf("the new owner's commit = %v, want superseded", err)
	}
	// The next commit with effects in the slot makes it a tombstone.
	other := aheadRun(t, s, 0)
	if err := s.CommitSteps(ctx, leaseOf(t, s, "w3", other), []store.StepCommit{incrementStep(t, s, "count", "views")}); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, keys[0]).Result(); err != nil || v != "" {
		t.Errorf("the receipt once recorded = %q, %v; want a tombstone", v, err)
	}
	if ttl := c.PTTL(ctx, keys[0]).Val(); ttl > time.Hour || ttl <= 0 {
		t.Errorf("a tombstone expires in %v, want within the hour", ttl)
	}
	if v, _ := s.Get(ctx, "views"); v != "2" {
		t.Errorf("views = %s, want 2 (one a run)", v)
	}
}

// TestIncrementOfANonIntegerAppliesNothing: Redis refuses to increment a
// value it does not write as an integer ("007", "-0"); a batch that would
// is refused whole before anything is written, on both paths.
func TestIncrementOfANonIntegerAppliesNothing(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		s, clock, _ := aheadStore(t)
		if !ahead {
			s = openWith(t, server(t).URL(11), redis.Options{Clock: clock, Partitions: 3})
		}
		ctx := context.Background()
		id := aheadRun(t, s, 1)
		l := leaseOf(t, s, "w", id)
		for _, bad := range []string{"007", "-0", "12345678901234567890"} {
			if err := s.Set(ctx, "bad", bad, 0); err != nil {
				t.Fatal(err)
			}
			err := s.CommitSteps(ctx, l, []store.StepCommit{incrementStep(t, s, "one", "views"), incrementStep(t, s, "two", "bad")})
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("ahead %v, %q: CommitSteps = %v, want invalid", ahead, bad, err)
			}
			if v, err := s.Get(ctx, "views"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("ahead %v, %q: views = %q, %v after a refused commit; want absent", ahead, bad, v, err)
			}
		}
	}
}
