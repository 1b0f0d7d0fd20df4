package redis_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestKeptRunLeavesItsEventAsBefore: a run kept in its event (sharing its
// id, queued without flow control) writes no hash at its publication; its
// claim writes the hash and cuts the event's line for it back to the id,
// on both publication paths (the transaction and the script), so a stored
// event costs what it did before (layout 6) once its run has started.
func TestKeptRunLeavesItsEventAsBefore(t *testing.T) {
	t.Parallel()
	srv := server(t)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := t.Context()
	for _, scripts := range []bool{false, true} {
		s := openWith(t, srv.URL(0), redis.Options{Clock: clockwork.NewRealClock(), PublishScriptOnly: scripts})
		id := ulid.Make().String()
		if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{ID: id, Name: "app/viewed", Data: json.RawMessage(`{"a":1}`)},
			Runs: []store.RunSpec{{ID: id, FunctionID: "fn", FinishTimeout: time.Minute}}}}); err != nil {
			t.Fatal(err)
		}
		prefix := redis.EnginePrefix(s)
		if n, _ := c.Exists(ctx, prefix+"run:"+id).Result(); n != 0 {
			t.Errorf("scripts %v: the queued run's hash was written at its publication", scripts)
		}
		kept, _ := c.Get(ctx, prefix+"event:"+id).Result()
		if !strings.Contains(kept, "\n"+id+"\t") {
			t.Errorf("scripts %v: the event holds no line for its run: %q", scripts, kept)
		}
		ls, err := s.Claim(ctx, "w", 10, time.Minute)
		if err != nil || len(ls) != 1 || ls[0].RunID != id || string(ls[0].Event.Data) != `{"a":1}` || ls[0].Run.FinishTimeout != time.Minute {
			t.Fatalf("scripts %v: Claim = %+v, %v; want the run %s with its event and finish timeout", scripts, ls, err, id)
		}
		after, _ := c.Get(ctx, prefix+"event:"+id).Result()
		if doc, _, _ := strings.Cut(kept, "\n"); after != doc+"\n"+id {
			t.Errorf("scripts %v: the event after the claim is %q, want its JSON and the run's id", scripts, after)
		}
		if r, err := s.GetRun(ctx, id); err != nil || r.Status != store.StatusRunning {
			t.Errorf("scripts %v: GetRun = %+v, %v; want Running", scripts, r, err)
		}
	}
}

// TestListingKeptRunsReadsThemTogether: a listing of runs kept in their
// events (100 queued runs, by function and by status) lists every one and
// reads them again in one MULTI per read of the page (the listing by status
// reads the runs' heads, then the page), not one round trip per run.
func TestListingKeptRunsReadsThemTogether(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := t.Context()
	s := openWith(t, srv.URL(0), redis.Options{Clock: clockwork.NewRealClock()})
	const n = 100
	pubs := make([]store.Publication, n)
	for i := range pubs {
		id := ulid.Make().String()
		pubs[i] = store.Publication{Event: store.Event{ID: id, Name: "app/later", Data: json.RawMessage(`{}`)},
			Runs: []store.RunSpec{{ID: id, FunctionID: "later", AvailableAt: time.Now().Add(time.Hour)}}}
	}
	if _, err := s.Publish(ctx, pubs); err != nil {
		t.Fatal(err)
	}
	for _, f := range []store.RunFilter{{FunctionID: "later", Limit: n}, {Statuses: []store.Status{store.StatusQueued}, Limit: n}} {
		c.ConfigResetStat(ctx)
		p, err := s.ListRuns(ctx, f)
		if err != nil || len(p.Items) != n {
			t.Fatalf("ListRuns(%+v) = %d runs, %v; want %d", f, len(p.Items), err, n)
		}
		for _, r := range p.Items {
			if r.Status != store.StatusQueued || r.FunctionID != "later" || r.CreatedAt.IsZero() {
				t.Fatalf("ListRuns(%+v) listed %+v", f, r)
			}
		}
		if multi := commandStat(t, c, "multi", "calls"); multi > 2 {
			t.Errorf("ListRuns(%+v) sent %v MULTI, want at most 2 for the %d kept runs", f, multi, n)
		}
	}
}

// TestClaimPassesAQueuedRunWithNothingToLease: a queue entry whose run is
// neither a hash nor kept in an event (its event deleted by hand) is
// dropped by the claim, which leases the runs behind it.
func TestClaimPassesAQueuedRunWithNothingToLease(t *testing.T) {
	t.Parallel()
	srv := server(t)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := t.Context()
	s := openWith(t, srv.URL(0), redis.Options{Clock: clockwork.NewRealClock()})
	var ids []string
	for range 3 {
		id := ulid.Make().String()
		ids = append(ids, id)
		if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{ID: id, Name: "app/viewed", Data: json.RawMessage(`{}`)},
			Runs: []store.RunSpec{{ID: id, FunctionID: "fn"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	c.Del(ctx, redis.EnginePrefix(s)+"event:"+ids[0])
	ls, err := s.Claim(ctx, "w", 10, time.Minute)
	if err != nil || len(ls) != 2 || ls[0].RunID != ids[1] || ls[1].RunID != ids[2] {
		t.Fatalf("Claim = %d leases, %v; want the two runs behind the one with nothing to lease", len(ls), err)
	}
	if n, _ := c.ZCard(ctx, redis.EnginePrefix(s)+"queue").Result(); n != 2 {
		t.Errorf("the queue holds %d entries, want the two leased runs'", n)
	}
}
