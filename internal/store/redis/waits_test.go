package redis_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
)

// waitOn records a Waiting step "approval" for the event name, due in ten
// minutes, and suspends the run until then.
func waitOn(t *testing.T, s *redis.Store, l *store.Lease, now time.Time, name string) {
	t.Helper()
	step := store.Step{RunID: l.RunID, ID: "approval", Name: "approval", Kind: store.StepWait, Status: store.StatusWaiting,
		StartedAt: now, WakeAt: now.Add(10 * time.Minute), Wait: &store.Wait{Event: name}}
	if err := s.SaveStep(t.Context(), l, step, nil); err != nil {
		t.Fatalf("SaveStep(wait): %v", err)
	}
	if err := s.Suspend(t.Context(), l, store.Suspension{Status: store.StatusSleeping, AvailableAt: step.WakeAt}); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
}

// checkNoWaitsLeft expects nothing of the run's waits in the keyspace: no
// pending or completed wait of its own, no entry in the event's waits.
func checkNoWaitsLeft(t *testing.T, rdb *goredis.Client, prefix, runID, name string) {
	t.Helper()
	ctx := t.Context()
	if n := rdb.Exists(ctx, prefix+"runwaits:"+runID, prefix+"matched:"+runID).Val(); n != 0 {
		t.Errorf("%d wait keys of the run are left", n)
	}
	if fields := rdb.HKeys(ctx, prefix+"waits:"+name).Val(); len(fields) != 0 {
		t.Errorf("waits:%s still holds %q", name, fields)
	}
}

// TestWaitsLeaveNothingBehind: the scripts look for a run's waits only
// when the run is marked as one that waited (w, layout 6), so a run that
// never waited carries no mark, and every way a wait ends (matched, timed
// out, the run cancelled) still leaves nothing of it behind.
func TestWaitsLeaveNothingBehind(t *testing.T) {
	t.Parallel()
	for _, end := range []string{"matched", "timed out", "cancelled"} {
		t.Run(strings.ReplaceAll(end, " ", "-"), func(t *testing.T) {
			t.Parallel()
			s, runID, ls, clock, prefix, rdb := rawLeasedRun(t)
			ctx := t.Context()
			now := clock.Now()
			first := store.Step{RunID: runID, ID: "first", Name: "first", Kind: store.StepRun, Status: store.StatusCompleted,
				Output: json.RawMessage(`1`), StartedAt: now, EndedAt: now}
			if err := s.SaveStep(ctx, &ls[0], first, nil); err != nil {
				t.Fatal(err)
			}
			if rdb.HExists(ctx, prefix+"run:"+runID, "w").Val() {
				t.Fatal("a run that never waited is marked as one that waited")
			}
			const name = "test/approved"
			waitOn(t, s, &ls[0], now, name)
			if rdb.HGet(ctx, prefix+"run:"+runID, "w").Val() != "1" {
				t.Fatal("a waiting run is not marked")
			}
			approval := store.Step{RunID: runID, ID: "approval", Name: "approval", Kind: store.StepWait, Status: store.StatusCompleted,
				Output: json.RawMessage(`null`), StartedAt: now}
			switch end {
			case "matched":
				if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: name, Data: json.RawMessage(`{"ok":true}`)}}}); err != nil {
					t.Fatal(err)
				}
			case "timed out":
				clock.Advance(11 * time.Minute)
			case "cancelled":
				if _, err := s.CancelRun(ctx, runID, "stop"); err != nil {
					t.Fatal(err)
				}
				checkNoWaitsLeft(t, rdb, prefix, runID, name)
				return
			}
			ls, err := s.Claim(ctx, "w", 1, time.Minute)
			if err != nil || len(ls) != 1 {
				t.Fatalf("Claim after the wait: %v, %d leases", err, len(ls))
			}
			for _, st := range ls[0].Steps {
				if st.ID == "approval" && len(st.Output) > 0 && string(st.Output) != "null" {
					approval.Output = st.Output // the matched event, recorded as the step's output
				}
			}
			if end == "matched" && string(approval.Output) == "null" {
				t.Fatal("the claimed run does not hold the matched event")
			}
			approval.EndedAt = clock.Now()
			if err := s.SaveStep(ctx, &ls[0], approval, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.Finish(ctx, &ls[0], store.Outcome{Status: store.StatusCompleted}); err != nil {
				t.Fatal(err)
			}
			checkNoWaitsLeft(t, rdb, prefix, runID, name)
		})
	}
}

// TestUpgradeMarksWaitingRuns: a run that an earlier layout left waiting
// carries no mark; the upgrade to layout 6 marks it, so its waits are
// still found and dropped when it ends.
func TestUpgradeMarksWaitingRuns(t *testing.T) {
	t.Parallel()
	s, runID, ls, clock, prefix, rdb := rawLeasedRun(t)
	ctx := t.Context()
	const name = "test/upgraded"
	waitOn(t, s, &ls[0], clock.Now(), name)
	// As layout 5 left it: no mark.
	if err := rdb.HDel(ctx, prefix+"run:"+runID, "w").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, prefix+"layout", "5", 0).Err(); err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(prefix, "{engine}:")
	upgraded, err := redis.Open(ctx, server(t).URL(5), redis.Options{Prefix: base, SitePrefix: base + "site:", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer upgraded.Close()
	if _, err := upgraded.CancelRun(ctx, runID, "stop"); err != nil {
		t.Fatal(err)
	}
	if v := rdb.Get(ctx, prefix+"layout").Val(); v != redis.LayoutVersion {
		t.Errorf("layout after the upgrade = %q, want %s", v, redis.LayoutVersion)
	}
	checkNoWaitsLeft(t, rdb, prefix, runID, name)
}
