package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/engine/enginetest"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// stepConflicts is an engine Observer that counts StepTx conflicts, as
// cyberdrew_step_conflicts_total does.
type stepConflicts struct{ n atomic.Int64 }

func (*stepConflicts) RunStarted(string, time.Duration)          {}
func (*stepConflicts) RunSkipped(string, string)                 {}
func (*stepConflicts) RunFinished(string, string)                {}
func (*stepConflicts) StepAttempt(string, string, time.Duration) {}
func (*stepConflicts) LeaseLost()                                {}
func (*stepConflicts) LeaseTakenOver()                           {}
func (o *stepConflicts) StepConflict(string)                     { o.n.Add(1) }
func (*stepConflicts) StoreError(string)                         {}

// conflictsByStep is a store that counts the commits refused with
// store.ErrConflict (refused), and by name the steps in them that made a
// checked read: those whose read may have changed.
type conflictsByStep struct {
	store.Store
	mu      sync.Mutex
	n       map[string]int
	refused int
}

func (c *conflictsByStep) count(err error, steps []store.StepCommit) {
	if !errors.Is(err, store.ErrConflict) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused++
	for _, sc := range steps {
		if len(sc.Effects.Reads) > 0 {
			c.n[sc.Step.Name]++
		}
	}
}

func (c *conflictsByStep) CommitStep(ctx context.Context, l *store.Lease, s store.Step, emit []store.Publication, fx store.Effects) error {
	err := c.Store.CommitStep(ctx, l, s, emit, fx)
	c.count(err, []store.StepCommit{{Step: s, Effects: fx}})
	return err
}

func (c *conflictsByStep) CommitSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit) error {
	err := c.Store.CommitSteps(ctx, l, steps)
	c.count(err, steps)
	return err
}

func (c *conflictsByStep) Finish(ctx context.Context, l *store.Lease, o store.Outcome) error {
	err := c.Store.Finish(ctx, l, o)
	c.count(err, o.Steps)
	return err
}

// TestHotPostViewsNeverConflict: many views of ONE post at once, on 16
// workers. Counting a view checks no read (blind increments of the total
// and the day's count), so increment-views and track-daily-views never
// conflict; the total and the day's count are exact; milestone 100 is
// claimed once, by one run, and announced once. The only conflicts left
// are between runs racing for the claim of a milestone just reached (the
// claim's read is checked): at most one per racing worker, and the
// engine's StepConflict count is exactly the commits the store refused.
func TestHotPostViewsNeverConflict(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		clock := clockwork.NewFakeClockAt(start)
		st, _ := be.Open(t, ctx, clock)
		cs := &conflictsByStep{Store: st, n: map[string]int{}}
		obs := &stepConflicts{}
		eng, err := engine.New(engine.Options{Store: cs, Clock: clock, Validate: jobs.Validate, Observer: obs})
		if err != nil {
			t.Fatal(err)
		}
		if err := eng.Register(jobs.Functions(jobs.Deps{KV: st, Clock: clock, Mailer: jobs.Outbox{Dir: filepath.Join(t.TempDir(), "outbox")}})...); err != nil {
			t.Fatal(err)
		}
		if err := eng.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Stop(context.Background()) })
		changes := st.Subscribe(ctx)
		const (
			views   = 400
			workers = 16
		)
		var wg sync.WaitGroup
		errs := make(chan error, views)
		for i := range views {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := fmt.Sprintf(`{"slug":"hot","title":"Hot","referrer":"https://news.example/","region":"EU","visitor":"v%d"}`, i%40)
				if _, err := eng.Publish(ctx, []engine.IncomingEvent{{Name: jobs.EventPostViewed, Data: json.RawMessage(data)}}); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// Every run is waiting before the first worker starts: they all
		// contend for the post from the start.
		enginetest.StartPool(t, ctx, eng, engine.PoolOptions{Workers: workers, LeaseTTL: time.Hour})
		runs := func(fn string) int {
			p, err := st.ListRuns(ctx, store.RunFilter{FunctionID: fn, Statuses: []store.Status{store.StatusCompleted}, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			return len(p.Items)
		}
		backendtest.WaitFor(t, changes, 60*time.Second, "every view counted and the milestone handled", func() bool {
			return runs("track-post-view") == views && runs("handle-milestone") == 1
		}, nil)
		get := func(key string) string {
			v, err := st.Get(ctx, key)
			if err != nil {
				t.Fatalf("Get(%s): %v", key, err)
			}
			return v
		}
		if got := get("views:post:hot"); got != fmt.Sprint(views) {
			t.Errorf("total = %s, want %d", got, views)
		}
		if got := get("views:post:hot:day:2025-03-12"); got != fmt.Sprint(views) {
			t.Errorf("day views = %s, want %d", got, views)
		}
		if got := get("analytics:day:2025-03-12:referrer:news.example"); got != fmt.Sprint(views) {
			t.Errorf("referrer count = %s, want %d", got, views)
		}
		claimant := get("blog:milestone:hot:100")
		if _, err := st.Get(ctx, "blog:milestone:hot:1000"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("milestone 1000 claimed at %d views: %v", views, err)
		}
		// One claim: only the claimant's run recorded milestone 100.
		p, err := st.ListRuns(ctx, store.RunFilter{FunctionID: "track-post-view", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var claims []string
		for _, r := range p.Items {
			var out struct {
				Milestones []int64 `json:"milestones"`
			}
			if err := json.Unmarshal(r.Output, &out); err != nil {
				t.Fatalf("run %s output %s: %v", r.ID, r.Output, err)
			}
			if len(out.Milestones) > 0 {
				claims = append(claims, fmt.Sprintf("%s %v", r.ID, out.Milestones))
				if r.ID != claimant || len(out.Milestones) != 1 || out.Milestones[0] != 100 {
					t.Errorf("run %s claimed %v; the claim key names %s for 100", r.ID, out.Milestones, claimant)
				}
			}
		}
		if len(claims) != 1 {
			t.Errorf("%d runs claimed a milestone (%v), want 1", len(claims), claims)
		}
		evs, err := st.ListEvents(ctx, store.EventFilter{Name: jobs.EventMilestoneReached})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs.Items) != 1 {
			t.Errorf("%d milestone events, want 1", len(evs.Items))
		}

		cs.mu.Lock()
		defer cs.mu.Unlock()
		t.Logf("step conflicts: %d (by step: %v)", obs.n.Load(), cs.n)
		for _, step := range []string{"increment-views", "track-daily-views"} {
			if n := cs.n[step]; n != 0 {
				t.Errorf("%s conflicted %d times in %d views of one post, want 0", step, n, views)
			}
		}
		if n := cs.n["check-milestones"]; n > workers-1 {
			t.Errorf("check-milestones conflicted %d times, want at most %d (one per other worker racing for milestone 100)", n, workers-1)
		}
		if obs.n.Load() != int64(cs.refused) {
			t.Errorf("engine counted %d step conflicts, the store refused %d commits (%v)", obs.n.Load(), cs.refused, cs.n)
		}
	})
}
