package redis_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestNativeTTLsOnTheRealClock: on the real clock, site keys expire by
// their native TTLs alone (no deadline key is written), through the KV
// calls and through a step's effects, and a key expires for every call
// at the time its TTL says.
func TestNativeTTLsOnTheRealClock(t *testing.T) {
	t.Parallel()
	srv := server(t)
	s := open(t, srv.URL(7), clockwork.NewRealClock())
	ctx := t.Context()
	const ttl = 300 * time.Millisecond
	if err := s.Set(ctx, "s", "v", ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IncrBy(ctx, "n", 2, ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IncrBy(ctx, "n", 3, time.Hour); err != nil { // the ttl applies only when it creates the key
		t.Fatal(err)
	}
	if _, err := s.SetAdd(ctx, "set", ttl, "a", "b"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.SetNX(ctx, "s", "other", time.Hour); err != nil || ok {
		t.Fatalf("SetNX on a live key = %v, %v", ok, err)
	}
	if m, err := s.SetMembers(ctx, "set"); err != nil || len(m) != 2 || !slices.Contains(m, "a") || !slices.Contains(m, "b") {
		t.Errorf("SetMembers = %v, %v; want a and b", m, err)
	}
	if n, err := s.SetCard(ctx, "set"); err != nil || n != 2 {
		t.Errorf("SetCard = %d, %v; want 2", n, err)
	}
	if v, err := s.Get(ctx, "s"); err != nil || v != "v" {
		t.Errorf("Get = %q, %v; want v", v, err)
	}
	if _, err := s.Get(ctx, "set"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Get of a set: %v, want ErrInvalid", err)
	}
	if m, err := s.SetMembers(ctx, "absent"); err != nil || len(m) != 0 {
		t.Errorf("SetMembers of an absent key = %v, %v; want none", m, err)
	}
	// A step's effects, committed with its record.
	runID := ulid.Make().String()
	if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/ttl"}, Runs: []store.RunSpec{{ID: runID, FunctionID: "ttl"}}}}); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Claim: %v %d", err, len(ls))
	}
	tx := store.NewTx(s)
	if _, err := tx.IncrBy(ctx, "fx", 1, ttl); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.CommitStep(ctx, &ls[0], store.Step{RunID: runID, ID: "fx", Name: "fx", Kind: store.StepRun, Status: store.StatusCompleted,
		StartedAt: now, EndedAt: now}, nil, tx.Effects()); err != nil {
		t.Fatal(err)
	}

	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 7})
	defer rdb.Close()
	for _, k := range []string{"s", "n", "set", "fx"} {
		left, err := s.TTL(ctx, k)
		if err != nil || left <= 0 || left > ttl {
			t.Errorf("TTL(%s) = %v, %v; want within (0, %v]", k, left, err, ttl)
		}
	}
	keys := rdb.Keys(ctx, "*").Val()
	for _, k := range keys {
		if strings.Contains(k, "kvttl:") {
			t.Errorf("deadline key %s written on the real clock", k)
		}
	}

	time.Sleep(ttl + 100*time.Millisecond)
	if _, err := s.Get(ctx, "s"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after the ttl: %v, want not found", err)
	}
	if n, err := s.SetCard(ctx, "set"); err != nil || n != 0 {
		t.Errorf("SetCard after the ttl = %d, %v", n, err)
	}
	if n, err := s.IncrBy(ctx, "n", 1, 0); err != nil || n != 1 {
		t.Errorf("IncrBy after the ttl = %d, %v; want a new count of 1", n, err)
	}
	if _, err := s.TTL(ctx, "fx"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("TTL of the effect's key after its ttl: %v, want not found", err)
	}
	if ok, err := s.SetNX(ctx, "s", "again", 0); err != nil || !ok {
		t.Errorf("SetNX after the ttl = %v, %v", ok, err)
	}
	if left, err := s.TTL(ctx, "s"); err != nil || left != 0 {
		t.Errorf("TTL of a key without one = %v, %v", left, err)
	}
}

// TestBlindWritesOnTheRealClock: on the real clock a blind increment's
// key is checked with one GET (its type and its value at once); a commit
// whose blind increment Redis would refuse (a word, a set) is refused
// whole, and one it accepts creates a key with its TTL and leaves an
// existing key's TTL alone.
func TestBlindWritesOnTheRealClock(t *testing.T) {
	t.Parallel()
	srv := server(t)
	s := open(t, srv.URL(7), clockwork.NewRealClock())
	ctx := t.Context()
	if _, err := s.IncrBy(ctx, "hits", 10, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "word", "abc", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetAdd(ctx, "seen", 0, "a"); err != nil {
		t.Fatal(err)
	}
	runID := ulid.Make().String()
	if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "test/blind"},
		Runs: []store.RunSpec{{ID: runID, FunctionID: "blind"}}}}); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Claim: %v, %d leases", err, len(ls))
	}
	commit := func(step string, incr ...string) error {
		tx := store.NewTx(s)
		for _, k := range incr {
			if err := tx.IncrByBlind(ctx, k, 1, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		return s.CommitSteps(ctx, &ls[0], []store.StepCommit{{Effects: tx.Effects(), Step: store.Step{RunID: runID, ID: step, Name: step,
			Kind: store.StepRun, Status: store.StatusCompleted, StartedAt: now, EndedAt: now}}})
	}
	if err := commit("ok", "hits", "fresh"); err != nil {
		t.Fatalf("a commit of two blind increments: %v", err)
	}
	for _, bad := range []string{"word", "seen"} {
		if err := commit("bad-"+bad, "hits", bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("a commit with a blind increment of %s: %v, want ErrInvalid", bad, err)
		}
	}
	for k, want := range map[string]string{"hits": "11", "fresh": "1", "word": "abc"} {
		if got, err := s.Get(ctx, k); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", k, got, err, want)
		}
	}
	if ttl, err := s.TTL(ctx, "hits"); err != nil || ttl != 0 {
		t.Errorf("TTL of the existing counter = %v, %v; want none", ttl, err)
	}
	if ttl, err := s.TTL(ctx, "fresh"); err != nil || ttl <= 59*time.Minute {
		t.Errorf("TTL of the created counter = %v, %v; want about an hour", ttl, err)
	}
	steps, err := s.Steps(ctx, runID)
	if err != nil || len(steps) != 1 || steps[0].ID != "ok" {
		t.Errorf("steps after the refused commits: %v, %v; want only ok", steps, err)
	}

	// A counted commit (engine.StepIncr) answers with the value and
	// records it; one of a word is refused whole.
	count := func(step, key string) (int64, error) {
		tx := store.NewTx(s)
		if err := tx.IncrByBlind(ctx, key, 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		return s.CommitStepsCount(ctx, &ls[0], []store.StepCommit{{Effects: tx.Effects(), Step: store.Step{RunID: runID, ID: step, Name: step,
			Kind: store.StepRun, Status: store.StatusCompleted, StartedAt: now, EndedAt: now}}})
	}
	if n, err := count("count", "hits"); err != nil || n != 12 {
		t.Errorf("a counted commit of hits at 11 = %d, %v; want 12", n, err)
	}
	if _, err := count("count-word", "word"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("a counted commit of a word: %v, want ErrInvalid", err)
	}
	if steps, err := s.Steps(ctx, runID); err != nil || len(steps) != 2 || string(steps[1].Output) != "12" {
		t.Errorf("steps after the counted commits: %+v, %v; want ok, then count with the output 12", steps, err)
	}
}
