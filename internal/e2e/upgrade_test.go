package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// TestViewsCutShortByAnEarlierReleaseFinish upgrades a store in which an
// earlier release was killed in the middle of a page view's run: its
// first steps recorded with the outputs that release gave them, the
// post's count already added to, its lease still held. This release's
// daemon takes the run over when the lease lapses and finishes it: the
// view is not counted again, it counts in its day, and the milestone it
// made is announced once. (Each record below is what a release of the
// project wrote: increment-views as an engine.Step returning
// {"previous","total"} up to 2026-12-06, as a blind increment recording
// true for a day after; track-daily-views the day's views, check-milestones
// the list it claimed. Before, the run failed on decoding them, and the
// view was missing from its day for good.)
func TestViewsCutShortByAnEarlierReleaseFinish(t *testing.T) {
	const slug, title = "upgraded-post", "Upgraded post"
	keys := jobs.Keys{}
	date := epoch.UTC().Format("2006-01-02")
	for _, c := range []struct {
		name  string
		steps map[string]string // step -> recorded output, in order below
		day   bool              // the earlier release counted the day too
	}{
		{name: "increment-views as an object", steps: map[string]string{"increment-views": `{"previous":99,"total":100}`}},
		{name: "increment-views as a blind increment", steps: map[string]string{"increment-views": `true`}},
		{name: "every step before emit-milestones", day: true, steps: map[string]string{
			"increment-views": `{"previous":99,"total":100}`, "track-daily-views": `1`, "check-milestones": `[100]`}},
	} {
		for _, backend := range backends {
			t.Run(c.name+"/"+backend, func(t *testing.T) {
				t.Parallel()
				clock := clockwork.NewFakeClockAt(epoch)
				old, srv, dir := earlierStore(t, backend, clock)
				killedMidRun(t, old, clock, slug, title, keys, date, c.steps, c.day)

				d := deployAt(t, backend, clock, srv, dir)
				clock.Advance(time.Minute) // the killed daemon's lease lapses
				d.waitFor(t, "the cut-short view's run to end", func() bool {
					return len(d.runs(t, "track-post-view", "Completed", "Failed")) == 1
				})
				if rs := d.runs(t, "track-post-view", "Completed"); len(rs) != 1 {
					t.Fatalf("the cut-short run did not complete: %+v", d.runs(t, "track-post-view"))
				}
				d.checkViews(t, postViews{Slug: slug, Total: 100, Last7Days: 1})
				d.checkOneMilestone(t, title)
			})
		}
	}
}

// earlierStore opens, on backend, the store an earlier release used: a
// Redis server (returned, for the daemon that follows) or a SQLite file in
// dir (returned).
func earlierStore(t *testing.T, backend string, clock clockwork.Clock) (st store.Store, srv *redistest.Server, dir string) {
	t.Helper()
	dir = t.TempDir()
	var err error
	switch backend {
	case "redis":
		srv = redistest.StartT(t, false)
		st, err = redis.Open(t.Context(), srv.URL(0), redis.Options{Clock: clock})
	default:
		st, err = sqlite.Open(t.Context(), filepath.Join(dir, "cyberdrew.db"), sqlite.Options{Clock: clock})
	}
	if err != nil {
		t.Fatalf("opening the store the earlier release used: %v", err)
	}
	return st, srv, dir
}

// killedMidRun leaves in st what an earlier release left when it was
// killed during a page view's run: the view's event and run, the run
// leased for 10 s, steps recorded with the outputs that release gave them
// (steps, in the run's order), the post's count at 100 (its increment
// made) and, when day is set, the day's count at 1.
func killedMidRun(t *testing.T, st store.Store, clock clockwork.Clock, slug, title string, keys jobs.Keys, date string, steps map[string]string, day bool) {
	t.Helper()
	ctx := context.Background()
	data, _ := json.Marshal(map[string]string{"slug": slug, "title": title})
	var recorded []recordedStep
	for _, id := range []string{"increment-views", "track-daily-views", "check-milestones"} {
		out, ok := steps[id]
		if !ok {
			break
		}
		recorded = append(recorded, recordedStep{id: id, kind: store.StepRun, output: out})
	}
	killedIn(t, st, clock, store.Event{Name: jobs.EventPostViewed, Data: data, TS: clock.Now().UnixMilli()}, "track-post-view", recorded,
		func() {
			if err := st.Set(ctx, keys.PostViews(slug), "100", 0); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if day {
				if err := st.Set(ctx, keys.PostDayViews(slug, date), "1", 0); err != nil {
					t.Fatalf("Set: %v", err)
				}
			}
		})
}

// recordedStep is a step an earlier release recorded, with what it
// emitted.
type recordedStep struct {
	id     string
	kind   store.StepKind
	output string
	emit   []store.Publication
}

// killedIn leaves in st what an earlier release's daemon left when it was
// killed during a run of fn: ev and the run, the run leased for 10 s, its
// effects made (effects) and its steps recorded, then
// the store closed with the lease neither released nor renewed.
func killedIn(t *testing.T, st store.Store, clock clockwork.Clock, ev store.Event, fn string, steps []recordedStep, effects func()) {
	t.Helper()
	ctx := context.Background()
	runID := ulid.Make().String()
	if _, err := st.Publish(ctx, []store.Publication{{Event: ev, Runs: []store.RunSpec{{ID: runID, FunctionID: fn}}}}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	leases, err := st.Claim(ctx, "earlier-release:1", 1, 10*time.Second)
	if err != nil || len(leases) != 1 {
		t.Fatalf("Claim = %v, %v", leases, err)
	}
	if effects != nil {
		effects()
	}
	now := clock.Now()
	for _, r := range steps {
		s := store.Step{RunID: runID, ID: r.id, Name: r.id, Kind: r.kind, Status: store.StatusCompleted,
			Output: json.RawMessage(r.output), StartedAt: now, EndedAt: now, Attempts: []store.Attempt{{StartedAt: now, EndedAt: now}}}
		if err := st.SaveStep(ctx, &leases[0], s, r.emit); err != nil {
			t.Fatalf("SaveStep %s: %v", r.id, err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestViewsLayout7LeftQueuedAreCounted upgrades a Redis keyspace that a
// layout-7 release left with page views queued for later: each view's run
// kept in its event on a line naming it ("<id>\t<created>\t<fn>", which
// layout 8 writes without the id). This release's daemon lists them as
// queued, and once they are due counts each view once.
func TestViewsLayout7LeftQueuedAreCounted(t *testing.T) {
	t.Parallel()
	const slug, title, views = "kept-post", "A post read later", 3
	clock := clockwork.NewFakeClockAt(epoch)
	old, srv, dir := earlierStore(t, "redis", clock)
	due := clock.Now().Add(time.Hour)
	for k := range views {
		data, _ := json.Marshal(map[string]any{"slug": slug, "title": title, "viewedAt": due.UTC().Format(time.RFC3339),
			"visitor": "later" + strconv.Itoa(k)})
		id := ulid.MustNew(ulid.Timestamp(clock.Now()), rand.Reader).String()
		if _, err := old.Publish(t.Context(), []store.Publication{{Event: store.Event{ID: id, Name: jobs.EventPostViewed, Data: data, TS: due.UnixMilli()},
			Runs: []store.RunSpec{{ID: id, FunctionID: "track-post-view", AvailableAt: due}}}}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	// What layout 7 wrote: the kept run's line names its id and its
	// creation in ms.
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := t.Context()
	rewritten := 0
	for _, key := range rdb.Keys(ctx, "cyberdrew:{engine}:event:*").Val() {
		id := strings.TrimPrefix(key, "cyberdrew:{engine}:event:")
		v := rdb.Get(ctx, key).Val()
		doc, line, _ := strings.Cut(v, "\n")
		delta, fn, ok := strings.Cut(strings.TrimPrefix(line, "\t"), "\t")
		d, err := strconv.ParseInt(delta, 10, 64)
		if !strings.HasPrefix(line, "\t") || !ok || err != nil {
			t.Fatalf("event %s: %q is not a kept run's line", id, line)
		}
		u := ulid.MustParse(id)
		rdb.Set(ctx, key, doc+"\n"+id+"\t"+strconv.FormatInt(int64(u.Time())+d, 10)+"\t"+fn, 0)
		rewritten++
	}
	if rewritten != views {
		t.Fatalf("rewrote %d events, want %d", rewritten, views)
	}
	rdb.Set(ctx, "cyberdrew:{engine}:layout", "7", 0)

	d := deployAt(t, "redis", clock, srv, dir)
	if q := d.runs(t, "track-post-view", "Queued"); len(q) != views {
		t.Fatalf("after the upgrade, %d views listed as queued, want %d: %v", len(q), views, q)
	}
	d.checkViews(t, postViews{Slug: slug})
	clock.Advance(time.Hour)
	d.waitFor(t, "the views layout 7 left queued", func() bool {
		return len(d.runs(t, "track-post-view", "Completed")) == views
	})
	d.checkViews(t, postViews{Slug: slug, Total: views, Last7Days: views})
	if v := rdb.Get(ctx, "cyberdrew:{engine}:layout").Val(); v != "8" {
		t.Errorf("the keyspace's layout after the upgrade is %q, want 8", v)
	}
}
