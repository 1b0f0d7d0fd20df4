package redis_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// calls is how many times the server ran cmd ("fcall", "evalsha", "eval")
// since its counters were last reset.
func calls(t *testing.T, c *goredis.Client, cmd string) int64 {
	t.Helper()
	return int64(commandStat(t, c, cmd, "calls"))
}

// commandStat is a figure of cmd in INFO commandstats ("calls", "usec"),
// 0 when the server has not run cmd since its counters were reset.
func commandStat(t testing.TB, c *goredis.Client, cmd, figure string) float64 {
	t.Helper()
	info, err := c.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		stats, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for _, f := range strings.Split(stats, ",") {
			if v, ok := strings.CutPrefix(f, figure+"="); ok {
				n, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return n
			}
		}
	}
	return 0
}

// libraries lists the function libraries the server holds.
func libraries(t *testing.T, c *goredis.Client) []string {
	t.Helper()
	libs, err := c.FunctionList(t.Context(), goredis.FunctionListQuery{}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range libs {
		names = append(names, l.Name)
	}
	return names
}

// runOnce publishes an event starting a run, claims it (leaseOne),
// records a step and finishes it, failing the test on any error; it returns the run.
func runOnce(t *testing.T, s *redis.Store) store.Run {
	t.Helper()
	ctx := t.Context()
	l := leaseOne(t, s)
	now := time.Now()
	step := store.Step{ID: "a", Name: "a", Kind: "run", Status: store.StatusCompleted, Output: json.RawMessage(`1`),
		StartedAt: now, EndedAt: now}
	if err := s.SaveStep(ctx, &l, step, nil); err != nil {
		t.Fatalf("SaveStep: %v", err)
	}
	if err := s.Finish(ctx, &l, store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`2`)}); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	r, err := s.GetRun(ctx, l.RunID)
	if err != nil || r.Status != store.StatusCompleted {
		t.Fatalf("GetRun = %+v, %v; want it Completed", r, err)
	}
	return r
}

// On Redis 7 the engine's code runs as the functions of its library,
// loaded at Open, and a server that loses the library (FUNCTION FLUSH, a
// restart without persistence) has it loaded again by the next call,
// which then runs as a function. (Its publications go through the
// publish script: a publication stored as a transaction runs no engine
// code, and its check is an EVAL of its own, publishtx.go.)
func TestEngineRunsAsFunctions(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer c.Close()
	s := openWith(t, srv.URL(0), redis.Options{Clock: clockwork.NewRealClock(), PublishScriptOnly: true})
	if libs := libraries(t, c); len(libs) != 1 || !strings.HasPrefix(libs[0], "cyberdrew_") {
		t.Fatalf("libraries after Open = %v, want one cyberdrew_ library", libs)
	}
	if err := c.ConfigResetStat(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	runOnce(t, s)
	if n, e := calls(t, c, "fcall"), calls(t, c, "evalsha")+calls(t, c, "eval"); n < 4 || e != 0 {
		t.Errorf("a run's publish, claim, step and finish made %d FCALLs and %d script calls, want ≥ 4 and 0", n, e)
	}

	if err := c.FunctionFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	c.ConfigResetStat(t.Context())
	runOnce(t, s)
	if libs := libraries(t, c); len(libs) != 1 {
		t.Errorf("libraries after a call missed it = %v, want it loaded again", libs)
	}
	if e := calls(t, c, "evalsha") + calls(t, c, "eval"); e != 0 {
		t.Errorf("%d script calls after the library was flushed, want none: the library is loaded again", e)
	}

	// Callers that find it missing together load it once between them.
	if err := c.FunctionFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	c.ConfigResetStat(t.Context())
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 32 {
		wg.Go(func() {
			<-start
			if !redis.LoadLibrary(t.Context(), s) {
				t.Error("the library did not load")
			}
		})
	}
	close(start)
	wg.Wait()
	if n := calls(t, c, "function|load"); n < 1 || n > 3 {
		t.Errorf("32 callers that found the library missing loaded it %d times, want once or a few", n)
	}
	if libs := libraries(t, c); len(libs) != 1 {
		t.Errorf("libraries = %v, want it loaded", libs)
	}
}

// A server that refuses functions (here an ACL without them, as a server
// before Redis 7 refuses the commands) gets the same code as scripts, and
// the store works on it.
func TestScriptsWhereFunctionsAreRefused(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	ctx := context.Background()
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer c.Close()
	if err := c.Do(ctx, "ACL", "SETUSER", "nofn", "on", ">pw", "~*", "&*", "+@all", "-function", "-fcall", "-fcall_ro").Err(); err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(srv.URL(0), "redis://", "redis://nofn:pw@", 1)
	s := openWith(t, url, redis.Options{Clock: clockwork.NewRealClock()})
	c.ConfigResetStat(ctx)
	runOnce(t, s)
	if libs := libraries(t, c); len(libs) != 0 {
		t.Errorf("libraries = %v, want none", libs)
	}
	if e := calls(t, c, "evalsha") + calls(t, c, "eval"); e < 4 {
		t.Errorf("%d script calls for a run, want ≥ 4", e)
	}
}
