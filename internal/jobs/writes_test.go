package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/engine/enginetest"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// writeCounter is a store that counts the calls that write, by method:
// each is one transaction (SQLite) or one script (Redis).
type writeCounter struct {
	store.Store
	mu    sync.Mutex
	n     map[string]int
	reads int // Get calls
}

func (w *writeCounter) count(op string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n[op]++
}

func (w *writeCounter) Claim(ctx context.Context, owner string, n int, ttl time.Duration) ([]store.Lease, error) {
	ls, err := w.Store.Claim(ctx, owner, n, ttl)
	if len(ls) > 0 {
		w.count("Claim")
	}
	return ls, err
}

func (w *writeCounter) SaveStep(ctx context.Context, l *store.Lease, s store.Step, emit []store.Publication) error {
	w.count("SaveStep")
	return w.Store.SaveStep(ctx, l, s, emit)
}

func (w *writeCounter) CommitStep(ctx context.Context, l *store.Lease, s store.Step, emit []store.Publication, fx store.Effects) error {
	w.count("CommitStep")
	return w.Store.CommitStep(ctx, l, s, emit, fx)
}

func (w *writeCounter) CommitSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit) error {
	w.count("CommitSteps")
	return w.Store.CommitSteps(ctx, l, steps)
}

func (w *writeCounter) CommitStepsCount(ctx context.Context, l *store.Lease, steps []store.StepCommit) (int64, error) {
	w.count("CommitStepsCount")
	return w.Store.CommitStepsCount(ctx, l, steps)
}

// Get is counted apart (reads), not as a write.
func (w *writeCounter) Get(ctx context.Context, key string) (string, error) {
	w.mu.Lock()
	w.reads++
	w.mu.Unlock()
	return w.Store.Get(ctx, key)
}

func (w *writeCounter) Finish(ctx context.Context, l *store.Lease, o store.Outcome) error {
	w.count("Finish")
	return w.Store.Finish(ctx, l, o)
}

func (w *writeCounter) Suspend(ctx context.Context, l *store.Lease, s store.Suspension) error {
	w.count("Suspend")
	return w.Store.Suspend(ctx, l, s)
}

func (w *writeCounter) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	w.count("Set")
	return w.Store.Set(ctx, key, value, ttl)
}

func (w *writeCounter) SetNX(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	w.count("SetNX")
	return w.Store.SetNX(ctx, key, value, ttl)
}

func (w *writeCounter) IncrBy(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	w.count("IncrBy")
	return w.Store.IncrBy(ctx, key, delta, ttl)
}

func (w *writeCounter) SetAdd(ctx context.Context, key string, ttl time.Duration, members ...string) (int, error) {
	w.count("SetAdd")
	return w.Store.SetAdd(ctx, key, ttl, members...)
}

// TestTrackPostViewDurableWrites counts the store calls a run of
// track-post-view makes after its event is stored: the claim, the counted
// commit of increment-views (engine.StepIncr, which answers with the
// total), and the finish with track-daily-views and check-milestones (with
// their KV writes); and no read of a key. Before transactional steps each
// KV write was a write of its own: 14 per run; with one commit per step,
// 5; before StepIncr the total was read before the increment and again
// after it (two reads per run).
func TestTrackPostViewDurableWrites(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		clock := clockwork.NewFakeClockAt(start)
		st, _ := be.Open(t, ctx, clock)
		wc := &writeCounter{Store: st, n: map[string]int{}}
		eng, err := engine.New(engine.Options{Store: wc, Clock: clock, Validate: jobs.Validate})
		if err != nil {
			t.Fatal(err)
		}
		if err := eng.Register(jobs.Functions(jobs.Deps{KV: wc, Clock: clock, Mailer: jobs.Outbox{Dir: t.TempDir()}})...); err != nil {
			t.Fatal(err)
		}
		if err := eng.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Stop(context.Background()) })
		changes := st.Subscribe(ctx)
		const views = 20
		for i := range views {
			data := fmt.Sprintf(`{"slug":"post-%d","title":"Post","referrer":"https://news.example/","region":"EU","visitor":"v%d"}`, i%3, i)
			if _, err := eng.Publish(ctx, []engine.IncomingEvent{{Name: jobs.EventPostViewed, Data: json.RawMessage(data)}}); err != nil {
				t.Fatal(err)
			}
		}
		enginetest.StartPool(t, ctx, eng, engine.PoolOptions{Workers: 1, LeaseTTL: time.Hour})
		backendtest.WaitFor(t, changes, 30*time.Second, "every view counted", func() bool {
			p, err := st.ListRuns(ctx, store.RunFilter{FunctionID: "track-post-view", Statuses: []store.Status{store.StatusCompleted}})
			return err == nil && len(p.Items) == views
		}, nil)
		wc.mu.Lock()
		defer wc.mu.Unlock()
		total := 0
		var parts []string
		for op, n := range wc.n {
			total += n
			parts = append(parts, fmt.Sprintf("%s %.1f", op, float64(n)/views))
		}
		sort.Strings(parts)
		t.Logf("store writes per track-post-view run: %.1f (%s)", float64(total)/views, strings.Join(parts, ", "))
		if want := 3 * views; total != want {
			t.Errorf("store writes = %d for %d runs, want %d: a claim, one counted commit and a finish each", total, views, want)
		}
		if wc.reads != 0 {
			t.Errorf("%d reads of a key for %d runs, want none", wc.reads, views)
		}
		for op, want := range map[string]int{"Claim": views, "CommitStepsCount": views, "Finish": views} {
			if wc.n[op] != want {
				t.Errorf("%s: %d calls for %d runs, want %d", op, wc.n[op], views, want)
			}
		}
	})
}
