package daemon_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/engine"
)

// TestRetentionKeepsTheFileBounded runs cycles of 400 runs, each with
// a 2 KiB step result, on a daemon with a one-minute retention and a fake
// clock: after each cycle the clock passes the retention, the retention
// loop prunes every row, and the file gives the freed pages back, so its
// size after a prune does not grow from one cycle to the next.
func TestRetentionKeepsTheFileBounded(t *testing.T) {
	t.Parallel()
	const (
		cycles    = 4
		perCycle  = 400
		retention = time.Minute
	)
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Retention = retention
	clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	bulky := engine.Function{
		ID: "bulky", Triggers: []engine.Trigger{{Event: "test/bulky"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "fill", func(ctx context.Context) (string, error) {
				return strings.Repeat("x", 2048), nil
			})
		},
	}
	d := daemontest.Run(t, cfg, nil, daemon.Options{Clock: clock, Functions: []engine.Function{bulky}})
	c := client{t: t, base: "http://" + d.Addr()}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "cyberdrew.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(query string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	// until polls the database (no change announces a prune) until cond
	// holds, failing after a deadline.
	until := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("cycle: %s did not happen within 30 s", what)
			}
			<-tick.C
		}
	}

	var after []int // page_count after each cycle's prune
	for cycle := range cycles {
		for sent := 0; sent < perCycle; sent += 100 {
			body := make([]string, 100)
			for i := range body {
				body[i] = fmt.Sprintf(`{"name":"test/bulky","data":{"n":%d}}`, sent+i)
			}
			if code := c.do("POST", "/e/k", "["+strings.Join(body, ",")+"]", nil); code != 200 {
				t.Fatalf("intake: %d", code)
			}
		}
		until("every run completing", func() bool {
			return count(`SELECT count(*) FROM runs WHERE status = 'Completed'`) == perCycle
		})
		full := count(`PRAGMA page_count`)
		clock.Advance(retention + retention/4 + time.Second)
		until("the prune", func() bool {
			return count(`SELECT count(*) FROM runs`) == 0 && count(`SELECT count(*) FROM events`) == 0 &&
				count(`SELECT count(*) FROM steps`) == 0
		})
		pages, free := count(`PRAGMA page_count`), count(`PRAGMA freelist_count`)
		t.Logf("cycle %d: %d pages with %d runs, %d pages (%d free) after the prune", cycle+1, full, perCycle, pages, free)
		if free > 100 {
			t.Errorf("cycle %d: %d free pages left in the file after the prune", cycle+1, free)
		}
		after = append(after, pages)
	}
	for i, pages := range after[1:] {
		if pages > after[0]+after[0]/10 {
			t.Errorf("the file grows: %d pages after the first prune, %d after prune %d", after[0], pages, i+2)
		}
	}
}

// TestFunctionRetentionPrunesItsCompletedRuns: on each store, a function
// with a retention of an hour loses its completed runs (and their events)
// an hour after they ended, while its failed run and another function's
// runs keep the daemon's retention.
func TestFunctionRetentionPrunesItsCompletedRuns(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, cfg config.Serve) {
		clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
		handler := func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "work", func(ctx context.Context) (string, error) {
				if strings.Contains(string(r.Event.Data), "fail") {
					return "", engine.NonRetriable(errors.New("told to fail"))
				}
				return "done", nil
			})
		}
		fns := []engine.Function{
			{ID: "brief", Triggers: []engine.Trigger{{Event: "test/brief"}}, Retention: time.Hour, Handler: handler},
			{ID: "kept", Triggers: []engine.Trigger{{Event: "test/kept"}}, Handler: handler},
		}
		d := daemontest.Run(t, cfg, nil, daemon.Options{Clock: clock, Functions: fns})
		c := client{t: t, base: "http://" + d.Addr()}
		changes := c.stream("")
		send := func(name, data string) (event, run string) {
			t.Helper()
			var acc struct {
				IDs []string `json:"ids"`
			}
			if code := c.do("POST", "/e/k", fmt.Sprintf(`{"name":%q,"data":%s}`, name, data), &acc); code != 200 {
				t.Fatalf("intake: %d", code)
			}
			var runs runsAnswer
			c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
			if len(runs.Data) != 1 {
				t.Fatalf("runs of %s = %+v", name, runs.Data)
			}
			return acc.IDs[0], runs.Data[0].RunID
		}
		briefEvent, briefRun := send("test/brief", `{}`)
		_, failedRun := send("test/brief", `{"fail":true}`)
		keptEvent, keptRun := send("test/kept", `{}`)
		// The three run at once and end in any order.
		awaitRuns(t, changes, []string{briefRun, failedRun, keptRun}, 10*time.Second)

		clock.Advance(time.Hour + 15*time.Minute)
		deadline := time.Now().Add(30 * time.Second)
		for c.do("GET", "/v1/runs/"+briefRun, "", nil) != 404 {
			if time.Now().After(deadline) {
				t.Fatalf("the completed run of brief was not pruned an hour after it ended")
			}
			time.Sleep(20 * time.Millisecond) // no change announces a prune
		}
		if code := c.do("GET", "/v1/events/"+briefEvent, "", nil); code != 404 {
			t.Errorf("GET the pruned run's event = %d, want 404", code)
		}
		for what, path := range map[string]string{
			"the failed run of brief": "/v1/runs/" + failedRun,
			"the run of kept":         "/v1/runs/" + keptRun,
			"the event of kept":       "/v1/events/" + keptEvent,
		} {
			if code := c.do("GET", path, "", nil); code != 200 {
				t.Errorf("GET %s = %d, want 200: %s must keep the daemon's retention", path, code, what)
			}
		}
	})
}

// TestRetentionZeroStillDropsWhatExpired: with --retention 0 (keep every
// run and event), what expires still goes: the client ids events were sent
// with (remembered a day), and on SQLite the site's keys whose TTL passed
// (a view's session key, 30 minutes), which only a prune deletes there.
// The pruner did not run the store's Prune at all with retention 0, so on a
// busy site those rows piled up for good (an outside soak: some 220 expired
// session rows a minute at 4 views/s).
func TestRetentionZeroStillDropsWhatExpired(t *testing.T) {
	eachStore(t, func(t *testing.T, cfg config.Serve) {
		cfg.Retention = 0
		clock := clockwork.NewFakeClockAt(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
		d := daemontest.Run(t, cfg, nil, daemon.Options{Clock: clock})
		c := client{t: t, base: "http://" + d.Addr()}
		for i := range 3 {
			if code := c.do(http.MethodPost, "/e/dev", fmt.Sprintf(`{"name":"nobody/listens","id":"sent-with-id-%d","data":{}}`, i), nil); code != http.StatusOK {
				t.Fatalf("POST /e: %d", code)
			}
		}
		req, _ := http.NewRequest(http.MethodPost, c.base+"/api/views",
			strings.NewReader(`{"slug":"kept-forever","sessionId":"sess-1-abcdefgh","timeOnPage":6000,"isVisible":true}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("POST /api/views: %d", res.StatusCode)
		}
		left := expired(t, cfg)
		want := 4 // the 3 client ids and the session key
		if cfg.Store != "" {
			want = 3 // the session key has a native TTL
		}
		if n := left(clock.Now().Add(25 * time.Hour)); n < want {
			t.Fatalf("%d rows expire within a day, want %d: the test would prove nothing", n, want)
		}
		clock.Advance(25 * time.Hour) // past the day a client id is kept
		deadline := time.Now().Add(10 * time.Second)
		for left(clock.Now()) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d expired rows are still stored a day later with retention 0", left(clock.Now()))
			}
			clock.Advance(11 * time.Minute) // the next prune
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// expired counts what cfg's store holds that has expired at a time: client
// ids, and on SQLite the site's keys with a TTL (on Redis those are native
// TTLs).
func expired(t *testing.T, cfg config.Serve) func(at time.Time) int {
	t.Helper()
	if cfg.Store != "" {
		u, err := goredis.ParseURL(cfg.Store)
		if err != nil {
			t.Fatal(err)
		}
		rdb := goredis.NewClient(u)
		t.Cleanup(func() { rdb.Close() })
		return func(at time.Time) int {
			n, err := rdb.ZCount(context.Background(), "cyberdrew:{engine}:cidexp", "-inf", strconv.FormatInt(at.UnixMilli(), 10)).Result()
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(cfg.DataDir, "cyberdrew.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return func(at time.Time) int {
		var n int
		ms := at.UnixMilli()
		if err := db.QueryRow(`SELECT (SELECT count(*) FROM event_client_ids WHERE expires_at <= ?) + (SELECT count(*) FROM kv WHERE expires_at <= ?)`, ms, ms).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}
