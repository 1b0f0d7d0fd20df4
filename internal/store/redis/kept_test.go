package redis_test

import (
	"encoding/json"
	"strconv"
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

// TestKeptRunCostsItsEventLessThanItsID: a run kept in its event (sharing
// its id, queued without flow control) writes no hash at its publication,
// on both publication paths (the transaction and the script), and its
// event's line for it is shorter than the id alone that layout 6 wrote
// there; its claim writes the hash and leaves the event as it is. The
// run's creation and id read back from the line, whether the id is a ULID
// (its creation written after the id's time) or not.
func TestKeptRunCostsItsEventLessThanItsID(t *testing.T) {
	t.Parallel()
	srv, c := serverAndClient(t)
	ctx := t.Context()
	for _, scripts := range []bool{false, true} {
		s := openWith(t, srv.URL(0), redis.Options{Clock: clockwork.NewRealClock(), PublishScriptOnly: scripts})
		for _, id := range []string{ulid.Make().String(), "not-a-ulid-" + strconv.FormatBool(scripts)} {
			if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{ID: id, Name: "app/viewed", Data: json.RawMessage(`{"a":1}`)},
				Runs: []store.RunSpec{{ID: id, FunctionID: "fn", FinishTimeout: time.Minute}}}}); err != nil {
				t.Fatal(err)
			}
			prefix := redis.EnginePrefix(s)
			if n, _ := c.Exists(ctx, prefix+"run:"+id).Result(); n != 0 {
				t.Errorf("scripts %v, %s: the queued run's hash was written at its publication", scripts, id)
			}
			kept, _ := c.Get(ctx, prefix+"event:"+id).Result()
			doc, line, _ := strings.Cut(kept, "\n")
			if !strings.HasPrefix(line, "\t") || len(line) >= len(id) && len(id) == 26 {
				t.Errorf("scripts %v, %s: the event's line for its run is %q, want one shorter than its id", scripts, id, line)
			}
			ev, err := s.GetEvent(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := s.GetRun(ctx, id); err != nil || r.Status != store.StatusQueued || !r.CreatedAt.Equal(ev.ReceivedAt) {
				t.Errorf("scripts %v, %s: GetRun = %+v, %v; want Queued, created when its event was received (%v)", scripts, id, r, err, ev.ReceivedAt)
			}
			ls, err := s.Claim(ctx, "w", 10, time.Minute)
			if err != nil || len(ls) != 1 || ls[0].RunID != id || string(ls[0].Event.Data) != `{"a":1}` || ls[0].Run.FinishTimeout != time.Minute {
				t.Fatalf("scripts %v, %s: Claim = %+v, %v; want the run with its event and finish timeout", scripts, id, ls, err)
			}
			if after, _ := c.Get(ctx, prefix+"event:"+id).Result(); after != kept {
				t.Errorf("scripts %v, %s: the claim rewrote the event: %q, was %q", scripts, id, after, kept)
			}
			if n, _ := c.Exists(ctx, prefix+"run:"+id).Result(); n != 1 {
				t.Errorf("scripts %v, %s: the claim wrote no hash", scripts, id)
			}
			r, err := s.GetRun(ctx, id)
			if err != nil || r.Status != store.StatusRunning || !r.CreatedAt.Equal(ev.ReceivedAt) {
				t.Errorf("scripts %v, %s: GetRun after the claim = %+v, %v; want Running, created as before", scripts, id, r, err)
			}
			if p, err := s.ListRuns(ctx, store.RunFilter{EventID: id}); err != nil || len(p.Items) != 1 || p.Items[0].ID != id {
				t.Errorf("scripts %v, %s: the event's runs = %+v, %v; want its run", scripts, id, p.Items, err)
			}
			// Claimed, the next publication's run is the only one claimable.
			if err := s.Finish(ctx, &ls[0], store.Outcome{Status: store.StatusCompleted}); err != nil {
				t.Fatal(err)
			}
			if got, _ := c.Get(ctx, prefix+"event:"+id).Result(); got != kept || !strings.HasPrefix(got, doc+"\n") {
				t.Errorf("scripts %v, %s: the event after its run ended is %q, was %q", scripts, id, got, kept)
			}
		}
	}
}

// TestLayout7KeptRunsAreRead: a queued run layout 7 kept in its event, on a
// line that names it ("<id>\t<created>\t<fn>"), is read and claimed as
// before, with the creation its line holds.
func TestLayout7KeptRunsAreRead(t *testing.T) {
	t.Parallel()
	srv, c := serverAndClient(t)
	ctx := t.Context()
	s := openWith(t, srv.URL(0), redis.Options{Clock: clockwork.NewRealClock()})
	prefix := redis.EnginePrefix(s)
	id := ulid.Make().String()
	created := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	ms := strconv.FormatInt(created.UnixMilli(), 10)
	c.Set(ctx, prefix+"event:"+id, `{"name":"app/viewed","data":{"a":1}}`+"\n"+id+"\t"+ms+"\tfn", 0)
	c.ZAdd(ctx, prefix+"queue", goredis.Z{Score: float64(created.UnixMilli()), Member: id})
	if r, err := s.GetRun(ctx, id); err != nil || r.Status != store.StatusQueued || !r.CreatedAt.Equal(created) || r.FunctionID != "fn" {
		t.Errorf("GetRun = %+v, %v; want fn's run, Queued, created at %v", r, err, created)
	}
	ls, err := s.Claim(ctx, "w", 10, time.Minute)
	if err != nil || len(ls) != 1 || ls[0].RunID != id || string(ls[0].Event.Data) != `{"a":1}` {
		t.Fatalf("Claim = %+v, %v; want the run with its event", ls, err)
	}
	if r, err := s.GetRun(ctx, id); err != nil || r.Status != store.StatusRunning || !r.CreatedAt.Equal(created) {
		t.Errorf("GetRun after the claim = %+v, %v; want Running, created at %v", r, err, created)
	}
}

// TestListingKeptRunsReadsThemTogether: a listing of runs kept in their
// events (100 queued runs, by function and by status) lists every one and
// reads them in one MULTI (the listing by status reads the runs' heads,
// then the kept runs whole, and takes the page's from that read), not one
// round trip per run.
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
		if multi := commandStat(t, c, "multi", "calls"); multi > 1 {
			t.Errorf("ListRuns(%+v) sent %v MULTI, want 1 for the %d kept runs", f, multi, n)
		}
	}
}

// TestClaimPassesAQueuedRunWithNothingToLease: a queue entry whose run is
// neither a hash nor kept in an event (its event deleted by hand) is
// dropped by the claim, which leases the runs behind it.
func TestClaimPassesAQueuedRunWithNothingToLease(t *testing.T) {
	t.Parallel()
	srv, c := serverAndClient(t)
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

// serverAndClient is the shared server and a client of its own, closed
// with the test.
func serverAndClient(t *testing.T) (*redistest.Server, *goredis.Client) {
	srv := server(t)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	return srv, c
}
