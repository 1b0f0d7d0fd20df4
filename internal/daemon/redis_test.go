package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/engine"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestRedisEndToEnd runs hello-world on a daemon whose store is a real
// redis-server, then checks readiness follows Redis going away and back.
func TestRedisEndToEnd(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, true)
	cfg := testConfig(t.TempDir())
	cfg.Store = srv.URL(0)
	c := client{t: t, base: start(t, cfg, nil)}

	changes := c.stream("")
	var acc struct {
		IDs []string `json:"ids"`
	}
	if code := c.do("POST", "/e/anykey", `{"name":"test/hello.world","data":{"email":"a@b.c"}}`, &acc); code != 200 || len(acc.IDs) != 1 {
		t.Fatalf("intake answered %d %+v", code, acc)
	}
	var runs runsAnswer
	c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
	if len(runs.Data) != 1 {
		t.Fatalf("runs of the event = %+v", runs.Data)
	}
	if st := awaitRun(t, changes, runs.Data[0].RunID, 10*time.Second); st != store.StatusCompleted {
		t.Fatalf("run ended %s", st)
	}

	srv.Stop()
	if code := c.do("GET", "/readyz", "", nil); code != 503 {
		t.Errorf("/readyz with Redis down = %d, want 503", code)
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart redis: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.do("GET", "/readyz", "", nil) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not recover within 10 s of Redis coming back")
		}
		time.Sleep(50 * time.Millisecond) // a guard between probes
	}
}

// TestRedisOutageUnderLoad stops redis-server (SIGKILL; appendonly yes,
// appendfsync always) for five seconds while events keep arriving, then
// starts it again on the same directory: no acknowledged event is lost,
// intake answers 503 with Retry-After (never 500, never hanging) while
// Redis is away, /readyz follows, and the workers resume by themselves
// until every run completes.
func TestRedisOutageUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		outage  = 5 * time.Second
		senders = 4
		slow    = 3 * time.Second // an answer slower than this is a hang
	)
	srv := redistest.StartT(t, true)
	cfg := testConfig(t.TempDir())
	cfg.Store = srv.URL(0)
	cfg.Lease = 2 * time.Second
	fns := []engine.Function{{
		ID: "steady", Triggers: []engine.Trigger{{Event: "test/steady"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "work", func(ctx context.Context) (string, error) { return r.ID, nil })
		},
	}}
	c := client{t: t, base: start(t, cfg, fns)}

	var (
		mu       sync.Mutex
		acked    []string
		codes    = map[int]int{}
		slowest  time.Duration
		problems []string
	)
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	count503 := func() int { mu.Lock(); defer mu.Unlock(); return codes[503] }
	ctx, stop := context.WithCancel(context.Background())
	httpc := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				began := time.Now()
				res, err := httpc.Post(c.base+"/e/k", "application/json", strings.NewReader(fmt.Sprintf(`{"name":"test/steady","data":{"s":%d,"i":%d}}`, s, i)))
				took := time.Since(began)
				mu.Lock()
				slowest = max(slowest, took)
				if err != nil {
					problems = append(problems, fmt.Sprintf("intake: %v after %v", err, took))
					mu.Unlock()
					return
				}
				var acc struct {
					IDs []string `json:"ids"`
				}
				json.NewDecoder(res.Body).Decode(&acc)
				res.Body.Close()
				codes[res.StatusCode]++
				switch res.StatusCode {
				case 200:
					acked = append(acked, acc.IDs...)
				case 503:
					if res.Header.Get("Retry-After") == "" {
						problems = append(problems, "503 without Retry-After")
					}
				default:
					problems = append(problems, fmt.Sprintf("intake answered %d", res.StatusCode))
				}
				mu.Unlock()
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	// waitUntil re-checks cond every 20 ms; the deadline only guards
	// against a hang.
	waitUntil := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitUntil("200 events acknowledged", 20*time.Second, func() bool { return ackedCount() >= 200 })
	srv.Stop()
	down := time.Now()
	before := ackedCount()
	waitUntil("/readyz to answer 503", 5*time.Second, func() bool { return c.do("GET", "/readyz", "", nil) == 503 })
	waitUntil("intake to answer 503", 5*time.Second, func() bool { return count503() > 0 })
	time.Sleep(time.Until(down.Add(outage))) // the outage lasts this long: not a wait for a condition
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart redis: %v", err)
	}
	up := time.Now()
	waitUntil("/readyz to answer 200", 10*time.Second, func() bool { return c.do("GET", "/readyz", "", nil) == 200 })
	ready := time.Since(up)
	during := ackedCount() - before
	waitUntil("200 more events acknowledged", 20*time.Second, func() bool { return ackedCount() >= before+during+200 })
	stop()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	if slowest > slow {
		t.Errorf("the slowest intake answer took %v, want under %v", slowest, slow)
	}
	if codes[503] == 0 {
		t.Error("intake never answered 503 while Redis was down")
	}
	lost := 0
	for _, id := range acked {
		if code := c.do("GET", "/v1/events/"+id, "", nil); code != 200 {
			lost++
			t.Errorf("acknowledged event %s: %d", id, code)
		}
	}
	var runs map[string]string
	waitUntil("every run to complete", 30*time.Second, func() bool {
		runs = listRuns(c, "function=steady")
		if len(runs) < len(acked) {
			return false
		}
		for _, st := range runs {
			if st != "Completed" {
				return false
			}
		}
		return true
	})
	t.Logf("answers %v; %d events acknowledged (%d while Redis was down), %d lost; slowest answer %v; /readyz 200 again %v after Redis restarted; %d runs, all Completed",
		codes, len(acked), during, lost, slowest, ready, len(runs))
}

// TestRedisOfALaterLayoutIsRefused: a daemon does not start on a Redis
// whose engine keys a later cyberdrew marked with its layout (it could
// misread their records and run steps again); the error names both
// layouts, and the keys are left as they were.
func TestRedisOfALaterLayoutIsRefused(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, true)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	const layout = "cyberdrew:{engine}:layout"
	if err := rdb.Set(t.Context(), layout, "9", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t.TempDir())
	cfg.Store = srv.URL(0)
	d, err := daemon.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemon.Options{})
	if err == nil {
		d.Stop(t.Context())
		t.Fatal("a daemon started on a Redis of layout 9")
	}
	if !strings.Contains(err.Error(), "layout 9") || !strings.Contains(err.Error(), "later") {
		t.Errorf("the daemon's error %q does not name the later layout", err)
	}
	// serve exits 3 on it, which the systemd unit does not restart in a
	// loop (it did exit 1).
	if !errors.Is(err, store.ErrMisconfigured) {
		t.Errorf("the daemon's error %q is not ErrMisconfigured", err)
	}
	if v := rdb.Get(t.Context(), layout).Val(); v != "9" {
		t.Errorf("the layout became %q", v)
	}
}
