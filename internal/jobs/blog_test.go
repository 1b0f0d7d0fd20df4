package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

func TestConcurrentViewsCountOnceAndReachEachMilestoneOnce(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		var hooks sync.Map
		var posts atomic.Int32
		webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			hooks.Store(string(body), true)
			posts.Add(1)
		}))
		defer webhook.Close()
		b := setup(t, be, func(_ store.Store, _ *clockwork.FakeClock, d *jobs.Deps) {
			d.Config.MilestoneWebhook = webhook.URL
		})
		const views = 300
		var wg sync.WaitGroup
		errs := make(chan error, views)
		for i := range views {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := fmt.Sprintf(`{"slug":"go/durable","title":"Durable Go","referrer":"https://www.news.example/x","region":"EU","visitor":"v%d"}`, i%50)
				if _, err := b.eng.Publish(b.ctx, []engine.IncomingEvent{{Name: jobs.EventPostViewed, Data: json.RawMessage(data)}}); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		b.waitFor(t, "every view and the milestone handled", func() bool {
			return len(b.runs(t, "track-post-view", store.StatusCompleted)) == views &&
				len(b.runs(t, "handle-milestone", store.StatusCompleted)) == 1
		})
		if n := len(b.runs(t, "track-post-view")); n != views {
			t.Errorf("%d track-post-view runs, want %d", n, views)
		}
		if n := len(b.runs(t, "handle-milestone")); n != 1 {
			t.Errorf("%d handle-milestone runs, want 1", n)
		}
		if n := posts.Load(); n != 1 {
			t.Errorf("%d webhook posts, want 1", n)
		}
		if got := b.get(t, "views:post:go/durable"); got != "300" {
			t.Errorf("total = %s, want 300", got)
		}
		if b.native != nil {
			// The website reads the same numbers with plain Redis commands.
			nr, ctx := b.native, b.ctx
			if v, err := nr.Client.Get(ctx, nr.Key("views:post:go/durable")).Result(); err != nil || v != "300" {
				t.Errorf("GET %s = %q, %v; want 300", nr.Key("views:post:go/durable"), v, err)
			}
			day := nr.Key("views:post:go/durable:day:2025-03-12")
			if v, err := nr.Client.Get(ctx, day).Result(); err != nil || v != "300" {
				t.Errorf("GET %s = %q, %v; want 300", day, v, err)
			}
			if ttl, err := nr.Client.TTL(ctx, day).Result(); err != nil || ttl <= 89*24*time.Hour || ttl > 90*24*time.Hour {
				t.Errorf("TTL %s = %v, %v; want a native ttl of 90 days", day, ttl, err)
			}
			if n, err := nr.Client.SCard(ctx, nr.Key("analytics:day:2025-03-12:visitors")).Result(); err != nil || n != 50 {
				t.Errorf("SCARD visitors = %d, %v; want 50", n, err)
			}
			if v, err := nr.Client.Get(ctx, nr.Key("blog:milestone:go/durable:100")).Result(); err != nil || v == "" {
				t.Errorf("GET milestone claim = %q, %v", v, err)
			}
		}
		if got := b.get(t, "views:post:go/durable:day:2025-03-12"); got != "300" {
			t.Errorf("day = %s, want 300", got)
		}
		if ttl, _ := b.st.TTL(b.ctx, "views:post:go/durable:day:2025-03-12"); ttl != 90*24*time.Hour {
			t.Errorf("day ttl = %v, want 90 days", ttl)
		}
		if n, _ := b.st.SetCard(b.ctx, "analytics:day:2025-03-12:visitors"); n != 50 {
			t.Errorf("visitors = %d, want 50", n)
		}
		if got := b.get(t, "analytics:day:2025-03-12:referrer:news.example"); got != "300" {
			t.Errorf("referrer count = %s", got)
		}
		if got := b.get(t, "blog:post:go/durable:title"); got != "Durable Go" {
			t.Errorf("title = %q", got)
		}
		evs := b.events(t, jobs.EventMilestoneReached)
		if len(evs) != 1 {
			t.Fatalf("%d milestone events, want 1", len(evs))
		}
		// totalViews is the total the claiming run read after its own
		// increment: 100, or more when other views committed meanwhile.
		var m jobs.MilestoneReached
		if err := json.Unmarshal(evs[0].Data, &m); err != nil || m.Milestone != 100 || m.Slug != "go/durable" || m.Title != "Durable Go" || m.TotalViews < 100 || m.TotalViews > views {
			t.Errorf("milestone event %s (%v)", evs[0].Data, err)
		}
		if _, ok := hooks.Load(`{"text":"Durable Go just passed 100 views"}`); !ok {
			t.Errorf("webhook did not receive the milestone")
		}
		if _, err := b.st.Get(b.ctx, "blog:milestone:go/durable:1000"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("milestone 1000 claimed: %v", err)
		}
	})
}

// TestMilestoneWebhookEscapesForSlack walks the real path (a view that
// passes a milestone) and reads the text the webhook receives: a title's
// <, > and & arrive escaped as Slack wants them.
func TestMilestoneWebhookEscapesForSlack(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		texts := make(chan string, 1)
		webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				Text string `json:"text"`
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				t.Errorf("webhook body: %v", err)
			}
			texts <- body.Text
		}))
		defer webhook.Close()
		b := setup(t, be, func(_ store.Store, _ *clockwork.FakeClock, d *jobs.Deps) {
			d.Config.MilestoneWebhook = webhook.URL
		})
		if err := b.st.Set(b.ctx, "views:post:tags", "99", 0); err != nil {
			t.Fatal(err)
		}
		b.send(t, jobs.EventPostViewed, `{"slug":"tags","title":"<b>Tom & Jerry</b> -> Go"}`, "track-post-view")
		b.waitFor(t, "the milestone handled", func() bool {
			return len(b.runs(t, "handle-milestone", store.StatusCompleted)) == 1
		})
		if got, want := <-texts, "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt; -&gt; Go just passed 100 views"; got != want {
			t.Errorf("webhook text = %q, want %q", got, want)
		}
	})
}

func TestCounterJumpClaimsEveryPassedMilestone(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		if _, err := b.st.IncrBy(b.ctx, "views:post:big", 999, 0); err != nil {
			t.Fatal(err)
		}
		if ok, _ := b.st.SetNX(b.ctx, "blog:milestone:big:100", "earlier", 0); !ok {
			t.Fatal("seed claim")
		}
		id := b.send(t, jobs.EventPostViewed, `{"slug":"big","viewedAt":"2025-03-10T23:59:59Z"}`, "track-post-view")
		r := b.waitStatus(t, id, store.StatusCompleted)
		var out struct {
			Total      int64   `json:"total"`
			Date       string  `json:"date"`
			Milestones []int64 `json:"milestones"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil || out.Total != 1000 || out.Date != "2025-03-10" || !reflect.DeepEqual(out.Milestones, []int64{1000}) {
			t.Errorf("output %s", r.Output)
		}
		if got := b.get(t, "views:post:big:day:2025-03-10"); got != "1" {
			t.Errorf("day key of viewedAt = %s", got)
		}
	})
}

// TestImportedCountReachesNoPastMilestone: a post whose count was carried
// over from the old site (12 345 views, no claims) gets no milestone for
// the 100, 1 000 and 10 000 it passed long ago when its next view comes;
// the view only claims what it reaches itself.
func TestImportedCountReachesNoPastMilestone(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		if _, err := b.st.IncrBy(b.ctx, "views:post:imported", 12345, 0); err != nil {
			t.Fatal(err)
		}
		id := b.send(t, jobs.EventPostViewed, `{"slug":"imported","viewedAt":"2025-03-10T12:00:00Z"}`, "track-post-view")
		r := b.waitStatus(t, id, store.StatusCompleted)
		var out struct {
			Total      int64   `json:"total"`
			Milestones []int64 `json:"milestones"`
		}
		if err := json.Unmarshal(r.Output, &out); err != nil || out.Total != 12346 || len(out.Milestones) != 0 {
			t.Errorf("output %s, want total 12346 and no milestones", r.Output)
		}
		for _, m := range []string{"100", "1000", "10000"} {
			if got, err := b.st.Get(b.ctx, "blog:milestone:imported:"+m); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("milestone %s: claim %q, %v; want none", m, got, err)
			}
		}
	})
}

// failingKV fails its first scans, as a store outage would.
type failingKV struct {
	store.KV
	failures atomic.Int32
}

func (f *failingKV) Scan(ctx context.Context, prefix, cursor string, count int) ([]string, string, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, "", store.ErrUnavailable
	}
	return f.KV.Scan(ctx, prefix, cursor, count)
}

func TestCalculateTrendingScoresRecentViewsAndRetriesReadErrors(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		var kv *failingKV
		b := setup(t, be, func(st store.Store, _ *clockwork.FakeClock, d *jobs.Deps) {
			kv = &failingKV{KV: st}
			d.KV = kv
		})
		seed := map[string]string{
			"views:post:old":                  "1000",
			"views:post:old:day:2025-03-12":   "10",
			"views:post:fresh":                "20",
			"views:post:fresh:day:2025-03-12": "12",
			"views:post:fresh:day:2025-03-06": "4", // 6 days ago: recent
			"views:post:fresh:day:2025-03-05": "4", // 7 days ago: not recent
			"views:post:quiet":                "50",
			"views:post:quiet:day:2025-02-01": "50",
			"blog:post:fresh:title":           "Fresh post",
			"blog:trending":                   `[{"slug":"previous"}]`,
		}
		for k, v := range seed {
			if err := b.st.Set(b.ctx, k, v, 0); err != nil {
				t.Fatal(err)
			}
		}
		kv.failures.Store(1)
		acc, err := b.eng.Invoke(b.ctx, "calculate-trending", nil)
		if err != nil {
			t.Fatal(err)
		}
		id := acc.Runs[0].ID
		b.waitFor(t, "the failed scan to be recorded", func() bool {
			return len(b.steps(t, id)["fetch-post-data"].Attempts) == 1
		})
		if got := b.get(t, "blog:trending"); got != `[{"slug":"previous"}]` {
			t.Fatalf("a read error overwrote the list: %s", got)
		}
		b.clock.Advance(15 * time.Second)
		b.waitStatus(t, id, store.StatusCompleted)
		var got []jobs.TrendingPost
		if err := json.Unmarshal([]byte(b.get(t, "blog:trending")), &got); err != nil {
			t.Fatal(err)
		}
		want := []jobs.TrendingPost{
			{Slug: "fresh", Title: "Fresh post", Views: 20, RecentViews: 16, Score: 16 * 16 / 20.0},
			{Slug: "old", Title: "old", Views: 1000, RecentViews: 10, Score: 0.1},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("trending = %+v, want %+v", got, want)
		}
		if ttl, _ := b.st.TTL(b.ctx, "blog:trending"); ttl != 2*time.Hour {
			t.Errorf("ttl = %v", ttl)
		}
	})
}

func TestSummaryPeriods(t *testing.T) {
	t.Parallel()
	tick := time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC) // a Monday
	tests := []struct{ period, start, end string }{
		{jobs.PeriodDaily, "2025-03-02", "2025-03-02"},
		{jobs.PeriodWeekly, "2025-02-24", "2025-03-02"},
		{jobs.PeriodMonthly, "2025-02-01", "2025-02-28"},
	}
	for _, tt := range tests {
		s, e := jobs.SummaryPeriod(tt.period, tick)
		if s.Format("2006-01-02") != tt.start || e.Format("2006-01-02") != tt.end {
			t.Errorf("%s: %s..%s, want %s..%s", tt.period, s, e, tt.start, tt.end)
		}
	}
}

func TestWeeklySummaryCronGeneratesTheReport(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		views := []string{
			`{"slug":"a","title":"Post A","viewedAt":"2025-03-03T08:00:00Z","referrer":"https://search.example/q","visitor":"v1"}`,
			`{"slug":"a","viewedAt":"2025-03-04T08:00:00Z","visitor":"v1"}`,
			`{"slug":"b","title":"Post B","viewedAt":"2025-03-09T08:00:00Z","referrer":"search.example","visitor":"v2"}`,
			`{"slug":"b","viewedAt":"2025-03-10T08:00:00Z","visitor":"v3"}`, // the next week
		}
		for _, v := range views {
			b.waitStatus(t, b.send(t, jobs.EventPostViewed, v, "track-post-view"), store.StatusCompleted)
		}
		if err := b.st.Set(b.ctx, "blog:trending", `[{"slug":"a","title":"Post A","views":2,"recentViews":2,"score":2}]`, 0); err != nil {
			t.Fatal(err)
		}
		acc, err := b.eng.Invoke(b.ctx, "weekly-analytics-summary", json.RawMessage(`{"scheduled_at":"2025-03-10T00:00:00Z"}`))
		if err != nil {
			t.Fatal(err)
		}
		b.waitStatus(t, acc.Runs[0].ID, store.StatusCompleted)
		var gen []store.Run
		b.waitFor(t, "the summary run", func() bool {
			gen = b.runs(t, "generate-analytics-summary", store.StatusCompleted)
			return len(gen) == 1
		})
		var got jobs.Summary
		if err := json.Unmarshal(gen[0].Output, &got); err != nil {
			t.Fatal(err)
		}
		want := jobs.Summary{
			Period: "weekly", StartDate: "2025-03-03", EndDate: "2025-03-09",
			TotalViews: 3, UniquePosts: 2, UniqueVisitors: 2,
			TopPosts:      []jobs.PostCount{{Slug: "a", Title: "Post A", Views: 2}, {Slug: "b", Title: "Post B", Views: 1}},
			TopReferrers:  []jobs.ReferrerCount{{Host: "search.example", Views: 2}},
			NewMilestones: []jobs.Milestone{},
			Trending:      []jobs.TrendingPost{{Slug: "a", Title: "Post A", Views: 2, RecentViews: 2, Score: 2}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("summary\n got %+v\nwant %+v", got, want)
		}
		stored := b.get(t, "blog:analytics:weekly:2025-03-03")
		if stored != string(gen[0].Output) {
			t.Errorf("stored %s, output %s", stored, gen[0].Output)
		}
	})
}

// TestAdHocSummaryLeavesTheStoredOneAlone: a summary of a range that is not
// one whole period (the command line's --from/--to) is the run's output
// only: it used to be stored under the period's key, replacing the
// week's summary the site reads with a one-day "weekly" one.
func TestAdHocSummaryLeavesTheStoredOneAlone(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		b.waitStatus(t, b.send(t, jobs.EventPostViewed, `{"slug":"a","title":"Post A","viewedAt":"2025-03-04T08:00:00Z","visitor":"v1"}`, "track-post-view"), store.StatusCompleted)
		week := b.waitStatus(t, b.send(t, jobs.EventSummaryGenerate, `{"period":"weekly","startDate":"2025-03-03","endDate":"2025-03-09"}`, "generate-analytics-summary"), store.StatusCompleted)
		const key = "blog:analytics:weekly:2025-03-03"
		if stored := b.get(t, key); stored != string(week.Output) {
			t.Fatalf("the week's summary was not stored: %q", stored)
		}
		oneDay := b.waitStatus(t, b.send(t, jobs.EventSummaryGenerate, `{"period":"weekly","startDate":"2025-03-03","endDate":"2025-03-03"}`, "generate-analytics-summary"), store.StatusCompleted)
		if !strings.Contains(string(oneDay.Output), `"endDate":"2025-03-03"`) {
			t.Fatalf("the ad-hoc run's output = %s", oneDay.Output)
		}
		if stored := b.get(t, key); stored != string(week.Output) {
			t.Errorf("an ad-hoc range replaced the week's summary:\nstored %s\nweek   %s", stored, week.Output)
		}
	})
}

// TestPeriodFrom: the period --from alone covers, and which ranges are
// whole periods, the ones stored.
func TestPeriodFrom(t *testing.T) {
	t.Parallel()
	day := func(s string) time.Time { d, _ := time.Parse(time.DateOnly, s); return d }
	tests := []struct{ period, from, start, end string }{
		{jobs.PeriodDaily, "2025-03-05", "2025-03-05", "2025-03-05"},
		{jobs.PeriodWeekly, "2025-03-03", "2025-03-03", "2025-03-09"},
		{jobs.PeriodWeekly, "2025-03-05", "2025-03-05", "2025-03-11"},
		{jobs.PeriodMonthly, "2025-02-01", "2025-02-01", "2025-02-28"},
		{jobs.PeriodMonthly, "2024-02-01", "2024-02-01", "2024-02-29"},
		{jobs.PeriodMonthly, "2025-01-15", "2025-01-15", "2025-02-14"},
	}
	for _, tt := range tests {
		s, e := jobs.PeriodFrom(tt.period, day(tt.from))
		if s.Format(time.DateOnly) != tt.start || e.Format(time.DateOnly) != tt.end {
			t.Errorf("PeriodFrom(%s, %s) = %s..%s, want %s..%s", tt.period, tt.from, s.Format(time.DateOnly), e.Format(time.DateOnly), tt.start, tt.end)
		}
	}
	for _, tt := range []struct {
		period, start, end string
		whole              bool
	}{
		{jobs.PeriodDaily, "2025-03-05", "2025-03-05", true},
		{jobs.PeriodDaily, "2025-03-01", "2025-03-07", false},
		{jobs.PeriodWeekly, "2025-03-03", "2025-03-09", true},
		{jobs.PeriodWeekly, "2025-03-05", "2025-03-11", false}, // seven days, not from a Monday
		{jobs.PeriodWeekly, "2025-03-03", "2025-03-03", false},
		{jobs.PeriodMonthly, "2025-02-01", "2025-02-28", true},
		{jobs.PeriodMonthly, "2025-01-15", "2025-02-14", false},
	} {
		if got := jobs.WholePeriod(tt.period, day(tt.start), day(tt.end)); got != tt.whole {
			t.Errorf("WholePeriod(%s, %s..%s) = %v, want %v", tt.period, tt.start, tt.end, got, tt.whole)
		}
	}
}

// TestSummaryCronRefusesAMistypedTime: an invoke whose scheduled_at is not
// a time fails, naming it, where it summarised yesterday without a word.
func TestSummaryCronRefusesAMistypedTime(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		acc, err := b.eng.Invoke(b.ctx, "daily-analytics-summary", json.RawMessage(`{"scheduled_at":"garbage"}`))
		if err != nil {
			t.Fatal(err)
		}
		r := b.waitStatus(t, acc.Runs[0].ID, store.StatusFailed)
		if !strings.Contains(r.Error, `scheduled_at "garbage"`) {
			t.Errorf("the run's error = %q, want it to name scheduled_at", r.Error)
		}
		if gen := b.runs(t, "generate-analytics-summary"); len(gen) != 0 {
			t.Errorf("%d summaries requested from a mistyped time", len(gen))
		}
	})
}
