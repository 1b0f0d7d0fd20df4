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
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// leaseOne publishes an event starting one run and claims it.
func leaseOne(t *testing.T, s *redis.Store) store.Lease {
	t.Helper()
	ctx := t.Context()
	id := ulid.Make().String()
	if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "app/viewed", Data: json.RawMessage(`{}`)},
		Runs: []store.RunSpec{{ID: id, FunctionID: "fn"}}}}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	ls, err := s.Claim(ctx, "w", 10, time.Minute)
	if err != nil || len(ls) != 1 || ls[0].RunID != id {
		t.Fatalf("Claim = %v, %v; want the run %s", ls, err, id)
	}
	return ls[0]
}

// incrementStep is a completed step that adds 1 to key blindly.
func incrementStep(t *testing.T, s *redis.Store, id, key string) store.StepCommit {
	t.Helper()
	tx := store.NewTx(s)
	if err := tx.IncrByBlind(t.Context(), key, 1, 0); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return store.StepCommit{Step: store.Step{ID: id, Name: id, Kind: store.StepRun, Status: store.StatusCompleted,
		Output: json.RawMessage(`1`), StartedAt: now, EndedAt: now}, Effects: tx.Effects()}
}

// CommitStepsGet commits a run's deferred steps and reads a key they
// wrote in one round trip, on every path the store may take (its code as
// functions, the library gone from the server, its code as scripts): the
// read sees the commit, a key absent reads as not found, and a commit the
// store refuses (a lost lease) applies nothing and reads nothing.
func TestCommitStepsGet(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()
	for _, path := range []string{"functions", "library flushed", "scripts"} {
		s := openWith(t, srv.URL(0), redis.Options{Clock: clockwork.NewRealClock(), Scripts: path == "scripts"})
		if path == "library flushed" {
			if err := c.FunctionFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		c.ConfigResetStat(ctx)
		l := leaseOne(t, s)
		if err := s.Set(ctx, "views", "41", 0); err != nil {
			t.Fatal(err)
		}
		steps := []store.StepCommit{incrementStep(t, s, "increment", "views"), incrementStep(t, s, "other", "elsewhere")}
		v, readErr, err := s.CommitStepsGet(ctx, &l, steps, "views")
		if err != nil || readErr != nil || v != "42" {
			t.Errorf("%s: CommitStepsGet = %q, %v, %v; want 42 read after the commit", path, v, readErr, err)
		}
		got, err := s.Steps(ctx, l.RunID)
		if err != nil || len(got) != 2 {
			t.Errorf("%s: Steps = %d, %v; want both recorded", path, len(got), err)
		}
		if n, _ := s.Get(ctx, "elsewhere"); n != "1" {
			t.Errorf("%s: the other step's write = %q, want 1", path, n)
		}
		_, readErr, err = s.CommitStepsGet(ctx, &l, []store.StepCommit{incrementStep(t, s, "third", "absent")}, "nothing")
		if err != nil || !errors.Is(readErr, store.ErrNotFound) {
			t.Errorf("%s: read of an absent key = %v, %v; want ErrNotFound", path, readErr, err)
		}

		lost := l
		lost.Token = "not-the-token"
		v, _, err = s.CommitStepsGet(ctx, &lost, []store.StepCommit{incrementStep(t, s, "fourth", "views")}, "views")
		if !errors.Is(err, store.ErrLeaseLost) || v != "" {
			t.Errorf("%s: with a lost lease = %q, %v; want ErrLeaseLost and no value", path, v, err)
		}
		if n, _ := s.Get(ctx, "views"); n != "42" {
			t.Errorf("%s: views after the refused commit = %q, want 42", path, n)
		}
		if path == "functions" {
			if n := calls(t, c, "fcall"); n == 0 {
				t.Errorf("no FCALL on the functions path")
			}
		}
	}
}
