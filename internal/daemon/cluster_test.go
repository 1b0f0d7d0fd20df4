package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestTwoDaemonsShareARedisCluster runs two `cyberdrew serve` processes on
// a Redis Cluster URL (three masters, three replicas), the engine in one
// slot and spread over 12 partitions (--redis-partitions 12), and sends
// 1 000 events to both at once: every acknowledged event has exactly one
// run, every run completes, its step ran exactly once, and both daemons
// ran some.
func TestTwoDaemonsShareARedisCluster(t *testing.T) {
	t.Parallel()
	for _, partitions := range []int{1, 12} {
		t.Run(fmt.Sprintf("partitions-%d", partitions), func(t *testing.T) {
			t.Parallel()
			twoDaemonsOnACluster(t, partitions)
		})
	}
}

func twoDaemonsOnACluster(t *testing.T, partitions int) {
	const (
		events  = 1000
		batch   = 20
		workers = 8
	)
	cl := redistest.StartClusterT(t)
	dir := t.TempDir()
	var daemons []serveChild
	for range 2 {
		daemons = append(daemons, spawnServe(t, dir, "scale", "--store", cl.URL(), "--workers", strconv.Itoa(workers),
			"--redis-partitions", strconv.Itoa(partitions)))
	}
	began := time.Now()

	// One sender per daemon, each with its half of the events.
	var (
		mu    sync.Mutex
		acked = map[string]bool{} // event ids
	)
	httpc := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, len(daemons))
	for d, dm := range daemons {
		wg.Go(func() {
			for sent := 0; sent < events/len(daemons); sent += batch {
				body := make([]string, batch)
				for i := range body {
					body[i] = fmt.Sprintf(`{"name":"test/scale","data":{"d":%d,"n":%d}}`, d, sent+i)
				}
				res, err := httpc.Post(dm.base+"/e/k", "application/json", strings.NewReader("["+strings.Join(body, ",")+"]"))
				if err != nil {
					errs <- err
					return
				}
				var acc struct {
					IDs []string `json:"ids"`
				}
				err = json.NewDecoder(res.Body).Decode(&acc)
				res.Body.Close()
				if res.StatusCode != 200 || err != nil || len(acc.IDs) != batch {
					errs <- fmt.Errorf("intake of %s answered %d with %d ids (%v)", dm.base, res.StatusCode, len(acc.IDs), err)
					return
				}
				mu.Lock()
				for _, id := range acc.IDs {
					acked[id] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(acked) != events {
		t.Fatalf("%d distinct event ids acknowledged for %d events", len(acked), events)
	}
	sentIn := time.Since(began)

	c := client{t: t, base: daemons[1].base}
	var runs map[string]runOfEvent
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) { // a guard between listings
		runs = runsWithEvents(c, "function="+scaleFunction)
		done := 0
		for _, r := range runs {
			if r.status == "Completed" {
				done++
			}
		}
		if done >= events {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d runs completed 60 s after the load", done, len(runs))
		}
	}
	completedIn := time.Since(began)

	perEvent := map[string]int{}
	for id, r := range runs {
		if r.status != "Completed" {
			t.Errorf("run %s is %s", id, r.status)
		}
		if !acked[r.event] {
			t.Errorf("run %s of event %s, which was not acknowledged", id, r.event)
		}
		perEvent[r.event]++
	}
	for id := range acked {
		if perEvent[id] != 1 {
			t.Errorf("acknowledged event %s has %d runs, want 1", id, perEvent[id])
		}
	}
	byRun := map[string]int{}
	perPID := map[string]int{}
	for _, f := range readLedgers(t, dir) {
		byRun[f[1]]++
		perPID[f[2]]++
	}
	for id := range runs {
		if byRun[id] != 1 {
			t.Errorf("step of run %s ran %d times, want once", id, byRun[id])
		}
	}
	if len(byRun) != len(runs) {
		t.Errorf("the ledger names %d runs, the store %d", len(byRun), len(runs))
	}
	if len(perPID) != len(daemons) {
		t.Errorf("step executions per daemon %v: want both daemons to run some", perPID)
	}
	t.Logf("%d partitions: %d events acknowledged in %v, %d runs completed after %v, step executions per daemon %v",
		partitions, len(acked), sentIn.Round(time.Millisecond), len(runs), completedIn.Round(time.Millisecond), perPID)
}

// runOfEvent is a run's status and trigger event in a listing.
type runOfEvent struct{ status, event string }

// runsWithEvents pages through /v1/runs with query and returns run id ->
// its status and event.
func runsWithEvents(c client, query string) map[string]runOfEvent {
	c.t.Helper()
	out := map[string]runOfEvent{}
	for cursor := ""; ; {
		var page runsAnswer
		if code := c.do("GET", "/v1/runs?limit=1000&"+query+"&cursor="+cursor, "", &page); code != 200 {
			c.t.Fatalf("list runs: %d", code)
		}
		for _, r := range page.Data {
			out[r.RunID] = runOfEvent{r.Status, r.EventID}
		}
		if page.Cursor == "" {
			return out
		}
		cursor = page.Cursor
	}
}

// TestClusterNeedsTheSitePrefixInTheEngineSlot: on a Redis Cluster the
// site's functions commit their keys with their steps in one script, so
// a daemon running them with a site prefix outside the engine's slot
// would fail every such step. It refuses to start instead, naming the
// setting; with the tag in the prefix it starts.
func TestClusterNeedsTheSitePrefixInTheEngineSlot(t *testing.T) {
	t.Parallel()
	cl := redistest.StartClusterT(t)
	cfg := testConfig(t.TempDir())
	cfg.Store = cl.URL()
	for _, prefix := range []string{"", "site:"} {
		cfg.SitePrefix = prefix
		d, err := daemon.New(context.Background(), cfg, slog.New(slog.DiscardHandler), daemon.Options{})
		if err == nil {
			if d.Start(context.Background()) == nil {
				d.Stop(context.Background())
			}
			t.Fatalf("site prefix %q: the daemon started on a cluster", prefix)
		}
		if !strings.Contains(err.Error(), "--site-prefix") || !strings.Contains(err.Error(), "{engine}") {
			t.Errorf("site prefix %q: the error does not say what to set: %v", prefix, err)
		}
		// A setting to fix (serve exits 3), refused before anything is
		// written to the cluster: no function library was loaded.
		if !errors.Is(err, store.ErrMisconfigured) {
			t.Errorf("site prefix %q: %v, want store.ErrMisconfigured", prefix, err)
		}
		cc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{cl.Nodes[0].Addr}})
		if libs, err := cc.FunctionList(context.Background(), goredis.FunctionListQuery{}).Result(); err != nil || len(libs) != 0 {
			t.Errorf("site prefix %q: function libraries on the cluster: %v, %v; want none", prefix, libs, err)
		}
		cc.Close()
	}
	cfg.SitePrefix = "site:{engine}:"
	if err := startAndStop(cfg); err != nil {
		t.Errorf("site prefix %q: %v", cfg.SitePrefix, err)
	}
}

// startAndStop starts a daemon of cfg and stops it.
func startAndStop(cfg config.Serve) error {
	d, err := daemon.New(context.Background(), cfg, slog.New(slog.DiscardHandler), daemon.Options{})
	if err != nil {
		return err
	}
	if err := d.Start(context.Background()); err != nil {
		return err
	}
	return d.Stop(context.Background())
}

// TestPartitionedClusterNeedsTheSitePrefixInOneSlot: with
// --redis-partitions the engine's records leave the slot of {engine}, and
// a step's keys commit ahead of its record, in one slot of their own: a
// site prefix without a hash tag is refused, naming the setting, and one
// holding any tag starts.
func TestPartitionedClusterNeedsTheSitePrefixInOneSlot(t *testing.T) {
	t.Parallel()
	cl := redistest.StartClusterT(t)
	cfg := testConfig(t.TempDir())
	cfg.Store, cfg.RedisPartitions, cfg.SitePrefix = cl.URL(), 12, "site:"
	_, err := daemon.New(context.Background(), cfg, slog.New(slog.DiscardHandler), daemon.Options{})
	if !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), "--site-prefix") || !strings.Contains(err.Error(), "hash tag") {
		t.Fatalf("site prefix %q: %v, want store.ErrMisconfigured naming --site-prefix and a hash tag", cfg.SitePrefix, err)
	}
	cfg.SitePrefix = "site:{blog}:"
	if err := startAndStop(cfg); err != nil {
		t.Errorf("site prefix %q: %v", cfg.SitePrefix, err)
	}
}

// TestRedisPartitionsAreTheKeyspaces: a keyspace keeps the partitions it
// was created with. A daemon started with another --redis-partitions is
// refused as misconfigured (serve exits 3), naming the number to use, and
// one started with it runs.
func TestRedisPartitionsAreTheKeyspaces(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	start := func(partitions int) error {
		cfg := testConfig(t.TempDir())
		cfg.Store, cfg.RedisPartitions = srv.URL(0), partitions
		return startAndStop(cfg)
	}
	if err := start(12); err != nil {
		t.Fatalf("the first daemon, with 12 partitions: %v", err)
	}
	err := start(1)
	if !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), "open it with 12") {
		t.Errorf("a daemon with 1 partition on a keyspace of 12: %v, want store.ErrMisconfigured naming 12", err)
	}
	if err := start(12); err != nil {
		t.Errorf("a second daemon with 12 partitions: %v", err)
	}
}
