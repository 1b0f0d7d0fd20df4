package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// The site workload: page views of cyberdrew.dev's blog counted end to end
// by the real track-post-view function, next to an asynq task that makes
// the same Redis writes.

// Asynq task types of the site workload.
const (
	taskView      = "site:track-post-view"
	taskMilestone = "site:milestone"
)

// trackPostView is the site function the workload measures.
const trackPostView = "track-post-view"

// siteDayTTL is how long the per-day analytics keys live: jobs' dayDataTTL.
const siteDayTTL = 90 * 24 * time.Hour

// sitePosts are the posts viewed; sitePopularity spreads the views over
// them as a blog's traffic is spread: view i is of
// sitePosts[sitePopularity[i%len(sitePopularity)]].
var (
	sitePosts = []struct{ slug, title string }{
		{"durable-steps", "Durable steps in one Go binary"},
		{"notes/redis-lua", "Notes on Redis Lua"},
		{"sqlite-group-commit", "Group commit in SQLite"},
		{"self-hosting-inngest", "Replacing a hosted Inngest account"},
		{"bubbletea-dash", "A live dashboard with Bubble Tea"},
		{"hello-world", "Hello, world"},
	}
	sitePopularity = []int{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 5}
	siteReferrers  = []string{"https://news.ycombinator.com/", "", "https://www.google.com/", "https://cyberdrew.dev/blog", "https://lobste.rs/"}
	siteRegions    = []string{"US", "DE", "", "GB", "FR", "IN", "BR"}
)

// sitePost is the index in sitePosts of view i's post.
func sitePost(i int) int { return sitePopularity[i%len(sitePopularity)] }

// siteView is the data of view i as the site's /api/views route emits
// blog/post.viewed: the post, its title, the time of the view, the
// referrer, the region (from a trusted proxy's header) and an opaque
// visitor hash. The site sends no id and no ts.
func siteView(i int, at time.Time) jobs.PostViewed {
	p := sitePosts[sitePost(i)]
	return jobs.PostViewed{
		Slug: p.slug, Title: p.title, ViewedAt: at.UTC().Format(time.RFC3339),
		Referrer: siteReferrers[i%len(siteReferrers)], Region: siteRegions[i%len(siteRegions)],
		Visitor: fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15),
	}
}

// siteRun is one measurement of the site workload.
type siteRun struct {
	intake    cell // events (tasks) acknowledged per second while sending
	processed cell // views processed per second, from the first send to the last done
	share     cell // processed / intake
	commands  cell // Redis commands per view
	cpu       cell // Redis server CPU per view, µs
	bytes     cell // growth of the store per view, after the runs ended
}

func failedSite(err error) siteRun {
	c := failure(err)
	return siteRun{intake: c, processed: c, share: c, commands: c, cpu: c, bytes: c}
}

// result fills the rates of n views sent in sent and done in total.
func siteResult(n int, sent, total time.Duration) siteRun {
	in, done := rate(n, sent), rate(n, total)
	return siteRun{intake: in, processed: done, share: figure("%.2f", done.value/in.value)}
}

// runSiteWorkload measures the site's view counter end to end: views sent
// by producers keep-alive HTTP clients to the real daemon running the
// site's functions, until the last track-post-view run has completed; and
// asynq doing the same Redis writes per task.
func runSiteWorkload(ctx context.Context, e *env) ([]row, error) {
	n := e.size.siteViews
	var rows []row
	for i, p := range e.redisSettings() {
		// The systems take turns, round after round, so that the machine
		// getting busier or quieter weighs on each alike; each cell is
		// the median of its rounds.
		var sqs, rds, aqs []siteRun
		for range e.size.siteRounds {
			if i == 0 {
				sqs = append(sqs, e.siteCyber(ctx, backendSQLite, n))
			}
			if e.redis == nil {
				skipped := siteRun{intake: noRedis, processed: noRedis, share: noRedis, commands: noRedis, cpu: noRedis, bytes: noRedis}
				rds, aqs = append(rds, skipped), append(aqs, skipped)
				continue
			}
			if err := e.redis.reset(ctx, p); err != nil {
				return rows, err
			}
			rds = append(rds, e.siteCyber(ctx, backendRedis, n))
			if err := e.redis.reset(ctx, p); err != nil {
				return rows, err
			}
			aqs = append(aqs, e.siteAsynq(ctx, n))
		}
		sq, rd, aq := medianSite(sqs), medianSite(rds), medianSite(aqs)
		what := fmt.Sprintf("site workload: %d views of %d posts, %d clients, track-post-view", n, len(sitePosts), producers)
		if e.size.siteRounds > 1 {
			what += fmt.Sprintf(", median of %d rounds", e.size.siteRounds)
		}
		if aq.intake.ok {
			aq.intake.text += " (Client.Enqueue)"
		}
		if aq.share.ok {
			aq.share = note(aq.share.text + " (of its Client.Enqueue rate)")
		}
		rows = append(rows,
			row{scenario: fmt.Sprintf("%s: intake, one event per HTTP request, events/s ↑ (Redis: %s)", what, p.name), sqlite: sq.intake, redis: rd.intake, asynq: aq.intake},
			row{scenario: fmt.Sprintf("%s: end to end, first send to last run done, views/s ↑ (Redis: %s)", what, p.name), sqlite: sq.processed, redis: rd.processed, asynq: aq.processed},
			row{scenario: fmt.Sprintf("%s: processed / intake ↑ (Redis: %s)", what, p.name), sqlite: sq.share, redis: rd.share, asynq: aq.share},
		)
		if e.redis != nil {
			rows = append(rows, row{scenario: fmt.Sprintf("%s: Redis commands per view ↓ (Redis: %s)", what, p.name), redis: rd.commands, asynq: aq.commands})
			rows = append(rows, row{scenario: fmt.Sprintf("%s: Redis server CPU per view, µs ↓ (Redis: %s)", what, p.name), redis: rd.cpu, asynq: aq.cpu})
		}
		rows = append(rows, row{scenario: fmt.Sprintf("%s: bytes per stored view (SQLite file, Redis used_memory), after the runs, before pruning ↓ (Redis: %s)", what, p.name),
			sqlite: sq.bytes, redis: rd.bytes, asynq: aq.bytes})
	}
	return rows, nil
}

// medianSite is the median of each figure of runs (a zero siteRun for
// none).
func medianSite(runs []siteRun) siteRun {
	if len(runs) == 0 {
		return siteRun{}
	}
	median := func(of func(siteRun) cell) cell {
		cs := make([]cell, len(runs))
		for i, r := range runs {
			cs[i] = of(r)
		}
		return medianCell(cs)
	}
	return siteRun{
		intake:    median(func(r siteRun) cell { return r.intake }),
		processed: median(func(r siteRun) cell { return r.processed }),
		share:     median(func(r siteRun) cell { return r.share }),
		commands:  median(func(r siteRun) cell { return r.commands }),
		cpu:       median(func(r siteRun) cell { return r.cpu }),
		bytes:     median(func(r siteRun) cell { return r.bytes }),
	}
}

// siteCyber runs the real daemon with the site's functions and posts n
// blog/post.viewed events to its event API, one per request, from
// producers keep-alive clients; it waits for every track-post-view run to
// end, then checks each post's view counter.
func (e *env) siteCyber(ctx context.Context, backend string, n int) siteRun {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	dir, err := e.scratch()
	if err != nil {
		return failedSite(err)
	}
	d, err := startDaemon(ctx, backend, dir, e.redisURL()) // no functions named: the site's, as serve registers them
	if err != nil {
		return failedSite(err)
	}
	defer stopDaemon(d)
	runs := watchRuns(ctx, d.Store(), trackPostView)
	empty, _, err := e.storedBytes(ctx, backend, dir)
	if err != nil {
		return failedSite(err)
	}
	var before serverUse
	if backend == backendRedis {
		if before, err = e.redis.use(ctx); err != nil {
			return failedSite(err)
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * producers, MaxIdleConnsPerHost: 2 * producers}}
	defer client.CloseIdleConnections()
	target := "http://" + d.Addr() + "/e/bench-key"
	acked := make([]atomic.Int64, len(sitePosts))
	start := time.Now()
	sent, err := concurrently(n, func(i int) error {
		body, err := json.Marshal(struct {
			Name string          `json:"name"`
			Data jobs.PostViewed `json:"data"`
		}{jobs.EventPostViewed, siteView(i, time.Now())})
		if err != nil {
			return err
		}
		if err := post(ctx, client, target, body); err != nil {
			return err
		}
		acked[sitePost(i)].Add(1)
		return nil
	})
	if err != nil {
		return failedSite(err)
	}
	if err := runs.wait(ctx, n); err != nil {
		return failedSite(err)
	}
	total := time.Since(start)
	out := siteResult(n, sent, total)
	if backend == backendRedis {
		u := e.useSince(ctx, before, 0, n)
		out.commands, out.cpu = u.commands, u.cpu
	}
	if err := checkViews(ctx, d.Store(), acked); err != nil {
		return failedSite(err)
	}
	full, detail, err := e.storedBytes(ctx, backend, dir)
	if err != nil {
		return failedSite(err)
	}
	out.bytes = figure("%.0f", float64(full-empty)/float64(n))
	e.logf("site %s: %d views sent in %v, all %d runs done in %v; %s", backend, n, sent.Round(time.Millisecond), n, total.Round(time.Millisecond), stepMetrics(ctx, client, "http://"+d.Addr()))
	if detail != "" {
		e.logf("site %s: %d bytes stored for %d views, by table and index:%s", backend, full-empty, n, " "+detail)
	}
	return out
}

// stepMetrics summarises the daemon's step metrics of track-post-view for
// the progress log: its commits that conflicted, and its step attempts'
// count and mean duration.
func stepMetrics(ctx context.Context, client *http.Client, base string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "metrics: " + err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return "metrics: " + err.Error()
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "metrics: " + err.Error()
	}
	values := map[string]float64{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(name, `function="`+trackPostView+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		values[name[:strings.IndexByte(name, '{')]] += v
	}
	attempts := values["cyberdrew_step_duration_seconds_count"]
	return fmt.Sprintf("%.0f step conflicts, %.0f step attempts of %.2f ms on average",
		values["cyberdrew_step_conflicts_total"], attempts, 1000*values["cyberdrew_step_duration_seconds_sum"]/max(attempts, 1))
}

// checkViews compares each post's all-time view counter with the views
// acknowledged for it.
func checkViews(ctx context.Context, kv interface {
	Get(ctx context.Context, key string) (string, error)
}, acked []atomic.Int64) error {
	keys := jobs.Keys{}
	for i, p := range sitePosts {
		want := acked[i].Load()
		got, err := kv.Get(ctx, keys.PostViews(p.slug))
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, goredis.Nil) {
			got, err = "0", nil
		}
		if err != nil {
			return fmt.Errorf("read views of %s: %w", p.slug, err)
		}
		if got != fmt.Sprint(want) {
			return fmt.Errorf("views of %s = %s, want %d acknowledged", p.slug, got, want)
		}
	}
	return nil
}

// runWatch counts the ended runs of one function from the store's change
// notifications, and reads the runs again when it was told it lagged.
type runWatch struct {
	st      store.Store
	fn      string
	changes <-chan store.Change
	ended   map[string]store.Status
}

// watchRuns subscribes to st's changes; subscribe before the first send.
func watchRuns(ctx context.Context, st store.Store, fn string) *runWatch {
	return &runWatch{st: st, fn: fn, changes: st.Subscribe(ctx), ended: map[string]store.Status{}}
}

// wait returns once n runs have ended, an error if one did not complete.
// A second without a change reads the runs again: a subscriber that fell
// behind is told so (the lag marker) only with the next change, and after
// the last run's there is none (store.Fanout).
func (w *runWatch) wait(ctx context.Context, n int) error {
	for len(w.ended) < n {
		select {
		case <-time.After(time.Second):
			if err := w.reread(ctx); err != nil {
				return err
			}
		case c, ok := <-w.changes:
			switch {
			case !ok:
				return errors.New("the store closed its change stream")
			case c.Kind == "":
				if err := w.reread(ctx); err != nil {
					return err
				}
			case c.Kind == store.ChangeRun && c.FunctionID == w.fn && c.Status.Finished():
				w.ended[c.RunID] = c.Status
			}
		case <-ctx.Done():
			return fmt.Errorf("%d of %d %s runs ended: %w", len(w.ended), n, w.fn, ctx.Err())
		}
	}
	for id, s := range w.ended {
		if s != store.StatusCompleted {
			return fmt.Errorf("%s run %s ended %s", w.fn, id, s)
		}
	}
	return nil
}

// reread adds every ended run of the function the store lists.
func (w *runWatch) reread(ctx context.Context) error {
	f := store.RunFilter{FunctionID: w.fn, Limit: 1000,
		Statuses: []store.Status{store.StatusCompleted, store.StatusFailed, store.StatusCancelled, store.StatusSkipped}}
	for {
		p, err := w.st.ListRuns(ctx, f)
		if err != nil {
			return fmt.Errorf("list %s runs: %w", w.fn, err)
		}
		for _, r := range p.Items {
			w.ended[r.ID] = r.Status
		}
		if p.Cursor == "" {
			return nil
		}
		f.Cursor = p.Cursor
	}
}

// siteAsynq enqueues n view tasks from producers goroutines to a running
// asynq server whose handler makes track-post-view's Redis writes, waits
// until asynq has acknowledged them all, then checks the counters.
func (e *env) siteAsynq(ctx context.Context, n int) siteRun {
	ctx, cancel := context.WithTimeout(ctx, cellTimeout)
	defer cancel()
	client := asynq.NewClient(asynqConn(e.redis.addr))
	defer client.Close()
	rdb := goredis.NewClient(&goredis.Options{Addr: e.redis.addr, PoolSize: workers})
	defer rdb.Close()
	h := &viewHandler{rdb: rdb, client: client, done: newCountdown(n)}
	mux := asynq.NewServeMux()
	mux.HandleFunc(taskView, h.trackPostView)
	mux.HandleFunc(taskMilestone, func(context.Context, *asynq.Task) error { return nil })
	srv := newAsynqServer(e.redis.addr, workers)
	if err := srv.Start(mux); err != nil {
		return failedSite(fmt.Errorf("asynq: start: %w", err))
	}
	defer srv.Shutdown()
	empty, err := e.redis.usedMemory(ctx)
	if err != nil {
		return failedSite(err)
	}
	before, err := e.redis.use(ctx)
	if err != nil {
		return failedSite(err)
	}
	acked := make([]atomic.Int64, len(sitePosts))
	start := time.Now()
	sent, err := concurrently(n, func(i int) error {
		raw, err := json.Marshal(siteView(i, time.Now()))
		if err != nil {
			return err
		}
		if _, err := client.EnqueueContext(ctx, asynq.NewTask(taskView, raw)); err != nil {
			return fmt.Errorf("asynq: enqueue: %w", err)
		}
		acked[sitePost(i)].Add(1)
		return nil
	})
	if err != nil {
		return failedSite(err)
	}
	if err := h.done.wait(ctx); err != nil {
		return failedSite(err)
	}
	polls, err := waitProcessed(ctx, e.redis, n+int(h.milestones.Load()))
	if err != nil {
		return failedSite(err)
	}
	total := time.Since(start)
	if err := h.failed.Load(); err != nil {
		return failedSite(*err)
	}
	out := siteResult(n, sent, total)
	u := e.useSince(ctx, before, polls, n)
	out.commands, out.cpu = u.commands, u.cpu
	if err := checkViews(ctx, redisKV{rdb}, acked); err != nil {
		return failedSite(err)
	}
	full, err := e.redis.usedMemory(ctx)
	if err != nil {
		return failedSite(err)
	}
	out.bytes = figure("%.0f", float64(full-empty)/float64(n))
	e.logf("site asynq: %d views enqueued in %v, all processed in %v", n, sent.Round(time.Millisecond), total.Round(time.Millisecond))
	return out
}

// redisKV reads a string with go-redis.
type redisKV struct{ rdb *goredis.Client }

func (r redisKV) Get(ctx context.Context, key string) (string, error) {
	return r.rdb.Get(ctx, key).Result()
}

// viewHandler is track-post-view written as an asynq handler: the same
// Redis writes, with go-redis, as an asynq user would write them.
type viewHandler struct {
	rdb        *goredis.Client
	client     *asynq.Client
	done       *countdown
	milestones atomic.Int64
	failed     atomic.Pointer[error]
}

// trackPostView counts the view: the post's total, its day and the day's
// title, posts, visitor, referrer and region sets and counters in one
// MULTI/EXEC (one round trip, as track-post-view's two first steps), then
// claims each milestone the total passed with SETNX, records it in the
// day's set and enqueues a milestone task (the blog/milestone.reached
// event), as its third step does. A task has no steps: a retried task
// would count its view again.
func (h *viewHandler) trackPostView(ctx context.Context, t *asynq.Task) (err error) {
	defer func() {
		if err != nil {
			h.failed.CompareAndSwap(nil, &err)
		}
		h.done.hit()
	}()
	var ev jobs.PostViewed
	if err := json.Unmarshal(t.Payload(), &ev); err != nil || ev.Slug == "" {
		return fmt.Errorf("%w: malformed view %s", asynq.SkipRetry, t.Payload())
	}
	viewedAt := time.Now()
	if at, err := time.Parse(time.RFC3339, ev.ViewedAt); err == nil {
		viewedAt = at
	}
	date := viewedAt.UTC().Format(time.DateOnly)
	keys := jobs.Keys{}
	var total *goredis.IntCmd
	if _, err := h.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		total = p.Incr(ctx, keys.PostViews(ev.Slug))
		if ev.Title != "" {
			p.Set(ctx, keys.PostTitle(ev.Slug), ev.Title, 0)
		}
		add := func(key, member string) {
			p.SAdd(ctx, key, member)
			p.ExpireNX(ctx, key, siteDayTTL)
		}
		count := func(key string) {
			p.Incr(ctx, key)
			p.ExpireNX(ctx, key, siteDayTTL)
		}
		add(keys.DayPosts(date), ev.Slug)
		if ev.Visitor != "" {
			add(keys.DayVisitors(date), ev.Visitor)
		}
		if host := jobs.ReferrerHost(ev.Referrer); host != "" {
			add(keys.DayReferrers(date), host)
			count(keys.DayReferrer(date, host))
		}
		if ev.Region != "" {
			add(keys.DayRegions(date), ev.Region)
			count(keys.DayRegion(date, ev.Region))
		}
		count(keys.PostDayViews(ev.Slug, date))
		return nil
	}); err != nil {
		return fmt.Errorf("count view: %w", err)
	}
	now := total.Val()
	for _, m := range jobs.Milestones {
		if now-1 >= m || m > now {
			continue
		}
		id, _ := asynq.GetTaskID(ctx)
		ok, err := h.rdb.SetNX(ctx, keys.MilestoneClaim(ev.Slug, m), id, 0).Result()
		if err != nil {
			return fmt.Errorf("claim milestone %d: %w", m, err)
		}
		if !ok {
			continue
		}
		if _, err := h.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			p.SAdd(ctx, keys.DayMilestones(date), ev.Slug+"|"+fmt.Sprint(m))
			p.ExpireNX(ctx, keys.DayMilestones(date), siteDayTTL)
			return nil
		}); err != nil {
			return fmt.Errorf("record milestone %d: %w", m, err)
		}
		data, _ := json.Marshal(jobs.MilestoneReached{Slug: ev.Slug, Title: ev.Title, Milestone: m, TotalViews: now, ReachedAt: viewedAt.UTC().Format(time.RFC3339)})
		if _, err := h.client.EnqueueContext(ctx, asynq.NewTask(taskMilestone, data)); err != nil {
			return fmt.Errorf("enqueue milestone %d: %w", m, err)
		}
		h.milestones.Add(1)
	}
	return nil
}
