package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// Cost as the history grows (issue #14): the same intake and burn-down on
// a store that already holds a long history and on an empty one, side by
// side, and the admin API's listings on the long history.

// The history's events, and the functions they trigger: every event starts
// one run, so the history holds as many runs as events (plus one
// cyberdrew/function.failed event per failed run).
const (
	historyViewed  = "history/post.viewed"       // 70 %: history-view, 3 steps
	historyContact = "history/contact.submitted" // 10 %: history-contact, 2 steps, 1 in 5 fails
	historyRefresh = "history/github.refresh"    // 10 %: history-refresh, 1 step
	historyDeploy  = "history/deploy.finished"   // 10 %: history-purge, 2 steps

	historyContactFn = "history-contact"
)

// historyEvent is the name of the history's event i.
func historyEvent(i int) string {
	switch i % 10 {
	case 6:
		return historyContact
	case 7:
		return historyRefresh
	case 8:
		return historyDeploy
	}
	return historyViewed
}

// historyFails says whether event i's run fails: one contact form in five,
// so 2 % of the runs.
func historyFails(i int) bool { return i%10 == 6 && (i/10)%5 == 0 }

// historyData is the data of the history's event i, shaped as the site's
// events are, with n, its number.
func historyData(i int, at time.Time) []byte {
	var v any
	switch historyEvent(i) {
	case historyViewed:
		v = struct {
			N int `json:"n"`
			jobs.PostViewed
		}{i, siteView(i, at)}
	case historyContact:
		v = map[string]any{"n": i, "name": "Reader " + fmt.Sprint(i%997), "email": fmt.Sprintf("reader%d@example.com", i%997),
			"message": "Hello! I read your post on durable steps and have a question about retries and leases."}
	case historyRefresh:
		v = map[string]any{"n": i, "user": "dcyfr", "reason": "cron"}
	default:
		v = map[string]any{"n": i, "commit": fmt.Sprintf("%040x", uint64(i)*0x9e3779b97f4a7c15), "paths": []string{"/blog", "/"}}
	}
	raw, _ := json.Marshal(v)
	return raw
}

// historyFunctions are the functions that write the history; each calls
// done when its handler returns.
func historyFunctions(done func()) []engine.Function {
	number := func(r *engine.Run) int {
		var d struct {
			N int `json:"n"`
		}
		_ = json.Unmarshal(r.Event.Data, &d)
		return d.N
	}
	fn := func(id, event string, body func(ctx context.Context, r *engine.Run) (any, error)) engine.Function {
		return engine.Function{ID: id, Triggers: []engine.Trigger{{Event: event}}, Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			defer done()
			return body(ctx, r)
		}}
	}
	return []engine.Function{
		fn("history-view", historyViewed, func(ctx context.Context, r *engine.Run) (any, error) {
			n := number(r)
			total, err := engine.Step(ctx, r, "increment-views", func(context.Context) (int, error) { return n/7 + 1, nil })
			if err != nil {
				return nil, err
			}
			if _, err := engine.Step(ctx, r, "track-daily-views", func(context.Context) (string, error) { return time.Now().UTC().Format(time.DateOnly), nil }); err != nil {
				return nil, err
			}
			if _, err := engine.Step(ctx, r, "check-milestones", func(context.Context) ([]int, error) { return []int{}, nil }); err != nil {
				return nil, err
			}
			return map[string]int{"views": total}, nil
		}),
		fn(historyContactFn, historyContact, func(ctx context.Context, r *engine.Run) (any, error) {
			n := number(r)
			if _, err := engine.Step(ctx, r, "validate", func(context.Context) (bool, error) { return true, nil }); err != nil {
				return nil, err
			}
			id, err := engine.Step(ctx, r, "send-email", func(context.Context) (string, error) {
				if historyFails(n) {
					return "", engine.NonRetriable(errors.New("resend: 422: the to address is not a valid email"))
				}
				return fmt.Sprintf("re_%032x", n), nil
			})
			if err != nil {
				return nil, err
			}
			return map[string]string{"email_id": id}, nil
		}),
		fn("history-refresh", historyRefresh, func(ctx context.Context, r *engine.Run) (any, error) {
			weeks, err := engine.Step(ctx, r, "fetch-contributions", func(context.Context) ([]int, error) {
				w := make([]int, 53)
				for i := range w {
					w[i] = (number(r) + i) % 17
				}
				return w, nil
			})
			if err != nil {
				return nil, err
			}
			return map[string]int{"weeks": len(weeks)}, nil
		}),
		fn("history-purge", historyDeploy, func(ctx context.Context, r *engine.Run) (any, error) {
			if _, err := engine.Step(ctx, r, "purge-cdn", func(context.Context) (int, error) { return 2, nil }); err != nil {
				return nil, err
			}
			if _, err := engine.Step(ctx, r, "warm-cache", func(context.Context) (int, error) { return 12, nil }); err != nil {
				return nil, err
			}
			return nil, nil
		}),
	}
}

// fillWorkers run the history's functions while it is written: more than
// the daemon's default, so that group commit gathers more steps per
// durable write and the fill takes minutes, not a quarter of an hour.
const fillWorkers = 256

// fillHistory writes n events of the history, and their runs, into the
// store o opens, through the real engine as the daemon would write them:
// the events are published first in batches of 500 from two producers,
// then a pool of fillWorkers runs their functions. It returns how long
// the two phases took.
func fillHistory(ctx context.Context, o cyberOptions, n int) (published, ran time.Duration, err error) {
	o.workers = fillWorkers
	cd := newCountdown(n)
	c, err := openCyber(ctx, o, historyFunctions(cd.hit)...)
	if err != nil {
		return 0, 0, err
	}
	defer c.close()
	start := time.Now()
	const batch, fillers = 500, 2
	errs := make(chan error, fillers)
	var wg sync.WaitGroup
	for f := range fillers {
		wg.Go(func() {
			for from := f * batch; from < n; from += fillers * batch {
				evs := make([]engine.IncomingEvent, 0, batch)
				now := time.Now()
				for i := from; i < min(n, from+batch); i++ {
					evs = append(evs, engine.IncomingEvent{Name: historyEvent(i), Data: historyData(i, now)})
				}
				if _, err := c.eng.Publish(ctx, evs); err != nil {
					errs <- fmt.Errorf("cyberdrew: publish: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	published = time.Since(start)
	start = time.Now()
	if err := c.start(ctx); err != nil {
		return 0, 0, err
	}
	if err := cd.wait(ctx); err != nil {
		return 0, 0, err
	}
	if err := c.waitIdle(ctx, c.st.Subscribe(ctx)); err != nil {
		return 0, 0, err
	}
	return published, time.Since(start), nil
}

// historyStore is one store the scenario measures: where it lives, and
// how to empty it before it is used as an empty store.
type historyStore struct {
	backend  string
	dir      string // SQLite: the data directory (config.DBFile in it)
	redisURL string
}

func (s historyStore) options() cyberOptions {
	return cyberOptions{backend: s.backend, dir: s.dir, file: config.DBFile, redisURL: s.redisURL, workers: workers}
}

// historyRun is one store's measurement.
type historyRun struct {
	fill                   cell // seconds to write the history
	bytes                  cell // bytes per event with its run and steps
	intakeEmpty, intakeOld cell // events/s through HTTP
	intakeRatio            cell
	burnEmpty, burnOld     cell // runs/s
	burnRatio              cell
	listings               []cell // p50 / p99 per historyListings page
}

// historyListing is one admin listing measured on the long history, with
// the rule every item of its pages must follow.
type historyListing struct {
	path string
	keep func(item listItem) bool
}

// listItem is what the checks read of a listed run or event.
type listItem struct {
	FunctionID string `json:"function_id"`
	Status     string `json:"status"`
	Name       string `json:"name"`
}

var historyListings = []historyListing{
	{"/v1/runs", func(listItem) bool { return true }},
	{"/v1/runs?function=" + historyContactFn, func(it listItem) bool { return it.FunctionID == historyContactFn }},
	{"/v1/runs?status=Completed", func(it listItem) bool { return it.Status == string(store.StatusCompleted) }},
	{"/v1/runs?status=Failed", func(it listItem) bool { return it.Status == string(store.StatusFailed) }},
	{"/v1/events", func(listItem) bool { return true }},
	{"/v1/events?name=" + url.QueryEscape(historyContact), func(it listItem) bool { return it.Name == historyContact }},
}

// runHistory fills a store of each backend with the history, then
// measures the listings on it as filled, and intake and burn-down on it
// and on an empty store, alternately (empty, history, history, empty;
// historyRounds times).
func runHistory(ctx context.Context, e *env) ([]row, error) {
	n := e.size.history
	what := fmt.Sprintf("history: %d events and runs stored", n)
	sq := e.historySQLite(ctx)
	var rds []historyRun
	settings := e.redisSettings()
	if e.redis != nil {
		rds = e.historyRedis(ctx, settings)
	}
	redisCell := func(i int, pick func(historyRun) cell) cell {
		if e.redis == nil {
			return noRedis
		}
		return pick(rds[i])
	}
	rows := []row{
		{scenario: fmt.Sprintf("%s: filling it through the engine (%d workers), s", what, fillWorkers), sqlite: sq.fill, redis: redisCell(0, func(h historyRun) cell { return h.fill }), asynq: note("—")},
		{scenario: what + ": bytes per stored event with its run and steps (SQLite file, Redis used_memory) ↓", sqlite: sq.bytes, redis: redisCell(0, func(h historyRun) cell { return h.bytes })},
	}
	for i, p := range settings {
		var s historyRun
		if i == 0 {
			s = sq
		}
		intake := fmt.Sprintf("%s: enqueue through HTTP, %d producers, one event per request, events/s ↑ (Redis: %s)", what, producers, p.name)
		burn := fmt.Sprintf("%s: burn-down of %d queued no-op jobs, %d workers, jobs/s ↑ (Redis: %s)", what, e.size.historyBurn, workers, p.name)
		none := note("no history kept")
		rows = append(rows,
			row{scenario: intake + ", empty store", sqlite: s.intakeEmpty, redis: redisCell(i, func(h historyRun) cell { return h.intakeEmpty }), asynq: none},
			row{scenario: intake + ", with the history", sqlite: s.intakeOld, redis: redisCell(i, func(h historyRun) cell { return h.intakeOld }), asynq: none},
			row{scenario: intake + ": history / empty ↑", sqlite: s.intakeRatio, redis: redisCell(i, func(h historyRun) cell { return h.intakeRatio })},
			row{scenario: burn + ", empty store", sqlite: s.burnEmpty, redis: redisCell(i, func(h historyRun) cell { return h.burnEmpty }), asynq: none},
			row{scenario: burn + ", with the history", sqlite: s.burnOld, redis: redisCell(i, func(h historyRun) cell { return h.burnOld }), asynq: none},
			row{scenario: burn + ": history / empty ↑", sqlite: s.burnRatio, redis: redisCell(i, func(h historyRun) cell { return h.burnRatio })},
		)
	}
	for j, l := range historyListings {
		for k, page := range []string{"first page (50)", fmt.Sprintf("the page after %d items", e.size.historyDepth)} {
			at := 2*j + k
			rows = append(rows, row{
				scenario: fmt.Sprintf("%s: GET %s, %s, p50 / p99 ms ↓ (%d requests, one at a time)", what, l.path, page, e.size.historySample),
				sqlite:   sq.listings[at], redis: redisCell(0, func(h historyRun) cell { return h.listings[at] }), asynq: note("no equivalent listing"),
			})
		}
	}
	return rows, nil
}

// failedHistory is a measurement whose every cell says err.
func failedHistory(err error) historyRun {
	c := failure(err)
	h := historyRun{fill: c, bytes: c, intakeEmpty: c, intakeOld: c, intakeRatio: c, burnEmpty: c, burnOld: c, burnRatio: c}
	for range 2 * len(historyListings) {
		h.listings = append(h.listings, c)
	}
	return h
}

// historySQLite measures SQLite: fill a store, list it, then compare it
// with fresh empty ones.
func (e *env) historySQLite(ctx context.Context) historyRun {
	const backend = backendSQLite
	ctx, cancel := context.WithTimeout(ctx, 2*cellTimeout)
	defer cancel()
	dir, err := e.scratch()
	if err != nil {
		return failedHistory(err)
	}
	old := historyStore{backend: backend, dir: dir}
	h, err := e.fillAndSize(ctx, old)
	if err != nil {
		return failedHistory(err)
	}
	empty := func() (historyStore, error) {
		d, err := e.scratch()
		return historyStore{backend: backend, dir: d}, err
	}
	if h.listings, err = e.measureListings(ctx, old); err != nil {
		return failedHistory(err)
	}
	if err := e.compareHistory(ctx, &h, old, empty); err != nil {
		return failedHistory(err)
	}
	return h
}

// historyRedis measures Redis: the history in database 0, filled once
// without AOF; the listings once, under the first setting; then, per
// setting, the history compared with an empty database 1.
func (e *env) historyRedis(ctx context.Context, settings []persistence) []historyRun {
	ctx, cancel := context.WithTimeout(ctx, 2*cellTimeout)
	defer cancel()
	out := make([]historyRun, len(settings))
	fail := func(err error) []historyRun {
		for i := range out {
			out[i] = failedHistory(err)
		}
		return out
	}
	if err := e.redis.reset(ctx, noAOF); err != nil {
		return fail(err)
	}
	old := historyStore{backend: backendRedis, redisURL: "redis://" + e.redis.addr + "/0"}
	first, err := e.fillAndSize(ctx, old)
	if err != nil {
		return fail(err)
	}
	db1 := goredis.NewClient(&goredis.Options{Addr: e.redis.addr, DB: 1})
	defer db1.Close()
	empty := func() (historyStore, error) {
		if err := db1.FlushDB(ctx).Err(); err != nil {
			return historyStore{}, fmt.Errorf("redis: flushdb: %w", err)
		}
		return historyStore{backend: backendRedis, redisURL: "redis://" + e.redis.addr + "/1"}, nil
	}
	for i, p := range settings {
		if err := e.redis.apply(ctx, p); err != nil {
			return fail(err)
		}
		h := historyRun{fill: first.fill, bytes: first.bytes}
		if i == 0 {
			if h.listings, err = e.measureListings(ctx, old); err != nil {
				out[i] = failedHistory(err)
				continue
			}
		}
		if err := e.compareHistory(ctx, &h, old, empty); err != nil {
			h = failedHistory(err)
		}
		out[i] = h
	}
	return out
}

// fillAndSize fills s with the history and reads what it takes.
func (e *env) fillAndSize(ctx context.Context, s historyStore) (historyRun, error) {
	n := e.size.history
	var before int64
	if s.backend == backendRedis {
		var err error
		if before, err = e.redis.usedMemory(ctx); err != nil {
			return historyRun{}, err
		}
	}
	published, ran, err := fillHistory(ctx, s.options(), n)
	if err != nil {
		return historyRun{}, fmt.Errorf("fill: %w", err)
	}
	took := published + ran
	var size int64
	switch s.backend {
	case backendSQLite:
		for _, suffix := range []string{"", "-wal"} {
			if fi, err := os.Stat(filepath.Join(s.dir, config.DBFile+suffix)); err == nil {
				size += fi.Size()
			}
		}
	case backendRedis:
		after, err := e.redis.usedMemory(ctx)
		if err != nil {
			return historyRun{}, err
		}
		size = after - before
	}
	e.logf("history %s: filled %d events and runs in %v (%.0f/s): published in %v, run in %v; %.0f MB", s.backend, n,
		took.Round(time.Millisecond), float64(n)/took.Seconds(), published.Round(time.Millisecond), ran.Round(time.Millisecond), float64(size)/1e6)
	return historyRun{fill: figure("%.1f", took.Seconds()), bytes: figure("%.0f", float64(size)/float64(n))}, nil
}

// compareHistory measures intake and burn-down on the history old and on
// empty stores, in the order empty, history, history, empty, so that a
// machine getting busier or quieter weighs on both alike, historyRounds
// times: one round of phases of a few seconds moves a ratio by ±10 %.
func (e *env) compareHistory(ctx context.Context, h *historyRun, old historyStore, empty func() (historyStore, error)) error {
	var intake, burned [2]time.Duration // [0] empty, [1] history
	var order []bool
	for range e.size.historyRounds {
		order = append(order, false, true, true, false)
	}
	for _, withHistory := range order {
		s, k := old, 1
		if !withHistory {
			var err error
			if s, err = empty(); err != nil {
				return err
			}
			k = 0
		}
		b, err := burn(ctx, s.options(), e.size.historyBurn, func() error { return nil })
		if err != nil {
			return fmt.Errorf("burn-down: %w", err)
		}
		in, err := intakeHTTP(ctx, s.backend, s.dir, s.redisURL, e.size.historyIntake)
		if err != nil {
			return fmt.Errorf("intake: %w", err)
		}
		e.logf("history %s (history %v): %d events through HTTP in %v, %d runs burnt down in %v", s.backend, withHistory,
			e.size.historyIntake, in.Round(time.Millisecond), e.size.historyBurn, b.Round(time.Millisecond))
		intake[k] += in
		burned[k] += b
	}
	phases := 2 * e.size.historyRounds // of each kind
	h.intakeEmpty, h.intakeOld = rate(phases*e.size.historyIntake, intake[0]), rate(phases*e.size.historyIntake, intake[1])
	h.burnEmpty, h.burnOld = rate(phases*e.size.historyBurn, burned[0]), rate(phases*e.size.historyBurn, burned[1])
	h.intakeRatio = figure("%.2f", h.intakeOld.value/h.intakeEmpty.value)
	h.burnRatio = figure("%.2f", h.burnOld.value/h.burnEmpty.value)
	return nil
}

// measureListings starts the real daemon on the history and times each
// listing's first page and its page after historyDepth items, each
// requested historySample times one after the other; every page must be
// full and hold only items its filter allows.
func (e *env) measureListings(ctx context.Context, s historyStore) ([]cell, error) {
	d, err := startDaemon(ctx, s.backend, s.dir, s.redisURL, noopFunction(nil))
	if err != nil {
		return nil, err
	}
	defer stopDaemon(d)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	base := "http://" + d.Addr()
	var out []cell
	for _, l := range historyListings {
		deep, err := walk(ctx, client, base, l, e.size.historyDepth)
		if err != nil {
			return nil, err
		}
		for _, path := range []string{l.path, withQuery(l.path, "cursor", deep)} {
			samples := make([]time.Duration, 0, e.size.historySample)
			for range e.size.historySample {
				start := time.Now()
				items, _, err := getPage(ctx, client, base+path)
				if err != nil {
					return nil, err
				}
				samples = append(samples, time.Since(start))
				if err := checkPage(path, items, l.keep, store.DefaultPageLimit); err != nil {
					return nil, err
				}
			}
			slices.Sort(samples)
			p50, p99 := percentile(samples, 0.5), percentile(samples, 0.99)
			e.logf("history %s: GET %s: p50 %v, p99 %v", s.backend, path, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			c := figure("%.2f", ms(p50))
			c.text += fmt.Sprintf(" / %.2f", ms(p99))
			out = append(out, c)
		}
	}
	return out, nil
}

// walk pages through l with the largest pages until depth items are
// behind, and returns the cursor there.
func walk(ctx context.Context, client *http.Client, base string, l historyListing, depth int) (string, error) {
	cursor, seen := "", 0
	for seen < depth {
		path := withQuery(l.path, "limit", fmt.Sprint(min(store.MaxPageLimit, depth-seen)))
		if cursor != "" {
			path = withQuery(path, "cursor", cursor)
		}
		items, next, err := getPage(ctx, client, base+path)
		if err != nil {
			return "", err
		}
		if err := checkPage(path, items, l.keep, 0); err != nil {
			return "", err
		}
		if next == "" {
			return "", fmt.Errorf("GET %s: the listing ended %d items in, before %d", path, seen+len(items), depth)
		}
		cursor, seen = next, seen+len(items)
	}
	return cursor, nil
}

// withQuery adds key=value to path's query.
func withQuery(path, key, value string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + key + "=" + url.QueryEscape(value)
}

// checkPage fails when a page holds an item its filter refuses, or fewer
// than want items (want 0: any number).
func checkPage(path string, items []listItem, keep func(listItem) bool, want int) error {
	if want > 0 && len(items) != want {
		return fmt.Errorf("GET %s: %d items, want %d", path, len(items), want)
	}
	for _, it := range items {
		if !keep(it) {
			return fmt.Errorf("GET %s: listed %+v, which the filter excludes", path, it)
		}
	}
	return nil
}

// getPage reads one page of an admin listing.
func getPage(ctx context.Context, client *http.Client, u string) ([]listItem, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("http: get: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("http: get: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("http: GET %s: status %d: %s", u, resp.StatusCode, raw)
	}
	var page struct {
		Data   []listItem `json:"data"`
		Cursor string     `json:"cursor"`
	}
	if err := json.Unmarshal(raw, &page); err != nil {
		return nil, "", fmt.Errorf("http: GET %s: %w", u, err)
	}
	return page.Data, page.Cursor, nil
}
