package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// The scale-out tests run several `cyberdrew serve` processes: this test
// binary re-executed with serveChildEnv set to the ledger directory and the
// serve command line as its arguments, parsed by the real CLI.
const (
	serveChildEnv = "CYBERDREW_TEST_SERVE_CHILD"
	// serveFuncsEnv picks the child's functions: "scale", "cron",
	// "shutdown", "chaos" or "site" (the site's real functions).
	serveFuncsEnv = "CYBERDREW_TEST_SERVE_FUNCS"
)

// Functions of the serve children.
const (
	scaleFunction = "scale-work"
	cronFunction  = "every-second"
)

// runServeChild runs `cyberdrew serve` with os.Args through the real CLI,
// registering the test functions of serveFuncsEnv, and prints its address.
func runServeChild(dir string) int {
	var fns []engine.Function
	switch os.Getenv(serveFuncsEnv) {
	case "cron":
		fns = cronFunctions(dir)
	case "shutdown", "chaos":
		fns = pacedFunctions(dir)
	case "site":
		fns = nil // the site's own functions (jobs.Functions)
	case "takeover-victim", "takeover":
		fns = takeoverFunctions(dir, os.Getenv(serveFuncsEnv) == "takeover-victim")
	default:
		fns = scaleFunctions(dir)
	}
	serve := func(ctx context.Context, cfg config.Serve, logger *slog.Logger) error {
		d, err := daemon.New(ctx, cfg, logger, daemon.Options{Functions: fns})
		if err != nil {
			return err
		}
		if err := d.Start(ctx); err != nil {
			return err
		}
		fmt.Printf("ADDR %s\n", d.Addr())
		<-ctx.Done()
		return d.Stop(context.Background())
	}
	getenv := func(string) string { return "" } // only the flags configure the child
	return int(cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, cli.Options{Serve: serve, Getenv: getenv}))
}

// ledger appends one line per step execution to dir/ledger-<pid> (O_APPEND,
// one file per process). A SIGKILL does not lose what write returned.
type ledger struct {
	mu   sync.Mutex
	path string
}

func newLedger(dir string) *ledger {
	return &ledger{path: filepath.Join(dir, fmt.Sprintf("ledger-%d", os.Getpid()))}
}

func (l *ledger) record(fields ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, strings.Join(append(fields, strconv.Itoa(os.Getpid())), " "))
	return err
}

// readLedgers returns every line of every process's ledger in dir, split
// into fields (the last one is the pid).
func readLedgers(t *testing.T, dir string) [][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "ledger-*"))
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]string
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			if line != "" {
				lines = append(lines, strings.Fields(line))
			}
		}
	}
	return lines
}

// scaleFunctions: one step that works for a moment, then records that it
// ran ("work <run> <pid>").
func scaleFunctions(dir string) []engine.Function {
	l := newLedger(dir)
	return []engine.Function{{
		ID: scaleFunction, Triggers: []engine.Trigger{{Event: "test/scale"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "work", func(ctx context.Context) (bool, error) {
				select { // the step's work: long enough that a killed daemon has steps in flight
				case <-time.After(20 * time.Millisecond):
				case <-ctx.Done():
					return false, ctx.Err()
				}
				return true, l.record("work", r.ID)
			})
		},
	}}
}

// takeoverFunction's runs record a first step ("first <run> <pid>"), then
// take a long second step: in the victim it lasts until the process dies,
// elsewhere it ends at once.
const takeoverFunction = "long-work"

func takeoverFunctions(dir string, victim bool) []engine.Function {
	l := newLedger(dir)
	return []engine.Function{{
		ID: takeoverFunction, Triggers: []engine.Trigger{{Event: "test/long"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			if _, err := engine.Step(ctx, r, "first", func(ctx context.Context) (bool, error) {
				return true, l.record("first", r.ID)
			}); err != nil {
				return nil, err
			}
			return engine.Step(ctx, r, "long", func(ctx context.Context) (bool, error) {
				if victim {
					<-ctx.Done()
					return false, ctx.Err()
				}
				return true, nil
			})
		},
	}}
}

// cronFunctions: a cron every second whose step records its tick
// ("tick <unix> <run> <pid>").
func cronFunctions(dir string) []engine.Function {
	l := newLedger(dir)
	return []engine.Function{{
		ID: cronFunction, Triggers: []engine.Trigger{{Cron: "* * * * * *"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			var data struct {
				ScheduledAt time.Time `json:"scheduled_at"`
			}
			if err := json.Unmarshal(r.Event.Data, &data); err != nil {
				return nil, engine.NonRetriable(err)
			}
			return engine.Step(ctx, r, "tick", func(ctx context.Context) (bool, error) {
				return true, l.record("tick", strconv.FormatInt(data.ScheduledAt.Unix(), 10), r.ID)
			})
		},
	}}
}

// serveChild is one running child daemon.
type serveChild struct {
	base string
	cmd  *exec.Cmd
}

// spawnServe starts `cyberdrew serve args…` in a child process with funcs
// ("scale" or "cron") and its ledger in dir.
func spawnServe(t *testing.T, dir, funcs string, args ...string) serveChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "error"}, args...)...)
	cmd.Env = append(os.Environ(), serveChildEnv+"="+dir, serveFuncsEnv+"="+funcs)
	return serveChild{base: startChild(t, cmd), cmd: cmd}
}

// listRuns pages through /v1/runs with query and returns run id -> status.
func listRuns(c client, query string) map[string]string {
	c.t.Helper()
	out := map[string]string{}
	for id, r := range runsWithEvents(c, query) {
		out[id] = r.status
	}
	return out
}

// TestThreeDaemonsShareOneRedisAndTakeOverAKilledOne runs three daemons on
// one redis-server, sends 2 000 events, SIGKILLs one daemon halfway, and
// checks that every run completes, that no step ran twice except the ones
// the killed daemon was executing when it died, and that the survivors
// took those over within the lease.
func TestThreeDaemonsShareOneRedisAndTakeOverAKilledOne(t *testing.T) {
	t.Parallel()
	const (
		events = 2000
		batch  = 20
		window = 200 // runs sent but not completed: keeps the queue short
		lease  = 3 * time.Second
		// workers per daemon: a killed daemon had at most this many steps in flight.
		workers = 8
	)
	srv := redistest.StartT(t, false)
	dir := t.TempDir()
	var daemons []serveChild
	for range 3 {
		daemons = append(daemons, spawnServe(t, dir, "scale", "--store", "redis://"+srv.Addr, "--lease", lease.String(), "--workers", strconv.Itoa(workers)))
	}
	victim := daemons[2]
	c := client{t: t, base: daemons[0].base}
	changes := c.stream("")

	alive := daemons
	completed := map[string]time.Time{} // run id -> when its completion was seen
	sent := 0
	var killedAt time.Time
	var leased map[string]bool // the victim's leased runs when it died
	guard := time.NewTicker(time.Second)
	defer guard.Stop()
	deadline := time.After(45 * time.Second)
	for len(completed) < events {
		for sent < events && sent-len(completed) < window {
			body := make([]string, batch)
			for i := range body {
				body[i] = fmt.Sprintf(`{"name":"test/scale","data":{"n":%d}}`, sent+i)
			}
			to := client{t: t, base: alive[(sent/batch)%len(alive)].base}
			var acc struct {
				IDs []string `json:"ids"`
			}
			if code := to.do("POST", "/e/k", "["+strings.Join(body, ",")+"]", &acc); code != 200 || len(acc.IDs) != batch {
				t.Fatalf("intake of %s: %d, %d ids", to.base, code, len(acc.IDs))
			}
			sent += batch
		}
		if killedAt.IsZero() && len(completed) >= events/2 {
			// Kill it at work. Its leases are read while it is stopped
			// (SIGSTOP), so the set cannot empty between the read and
			// the kill; a daemon caught between runs is let go on and
			// caught again (a kill then would not exercise the takeover).
			for busy := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
				if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond) // let Redis finish what it sent before it stopped
				if leased = leasedBy(t, srv.Addr, victim.cmd.Process.Pid); len(leased) > 0 {
					break
				}
				if err := victim.cmd.Process.Signal(syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				if time.Now().After(busy) {
					t.Fatalf("the daemon to kill took no run within 10 s, with %d sent and %d completed", sent, len(completed))
				}
			}
			if err := victim.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			victim.cmd.Wait()
			killedAt = time.Now()
			alive = daemons[:2]
			t.Logf("killed daemon %d after %d completed runs, holding %d leased runs", victim.cmd.Process.Pid, len(completed), len(leased))
		}
		select {
		case ch, ok := <-changes:
			if !ok {
				t.Fatal("stream ended")
			}
			if ch.Kind == store.ChangeRun && ch.FunctionID == scaleFunction && ch.Status == store.StatusCompleted {
				if _, seen := completed[ch.RunID]; !seen {
					completed[ch.RunID] = time.Now()
				}
			}
		case <-guard.C:
			// Changes may be dropped by a lagging stream: count the
			// completed runs from the API too.
			for id := range listRuns(c, "function="+scaleFunction+"&status=Completed") {
				if _, seen := completed[id]; !seen {
					completed[id] = time.Now()
				}
			}
		case <-deadline:
			t.Fatalf("%d of %d runs completed (%d sent)", len(completed), events, sent)
		}
	}

	if len(leased) == 0 {
		t.Fatal("the killed daemon held no lease: the takeover was not exercised")
	}
	var takeover time.Duration
	for id := range leased {
		at, ok := completed[id]
		if !ok {
			t.Errorf("leased run %s of the killed daemon never completed", id)
			continue
		}
		takeover = max(takeover, at.Sub(killedAt))
	}
	t.Logf("the survivors completed the killed daemon's %d runs %v after the kill (lease %v)", len(leased), takeover, lease)
	// The lease has to lapse first; the rest is claiming and running them,
	// which a loaded CI machine (-race, two cores) may slow down.
	if takeover > 2*lease {
		t.Errorf("takeover took %v, want within two leases (%v each)", takeover, lease)
	}

	all := listRuns(c, "function="+scaleFunction)
	if len(all) != events {
		t.Errorf("%d runs for %d events", len(all), events)
	}
	for id, st := range all {
		if st != "Completed" {
			t.Errorf("run %s is %s", id, st)
		}
	}
	victimPID := strconv.Itoa(victim.cmd.Process.Pid)
	byRun := map[string][]string{} // run -> pids that executed its step
	perPID := map[string]int{}
	for _, f := range readLedgers(t, dir) {
		byRun[f[1]] = append(byRun[f[1]], f[2])
		perPID[f[2]]++
	}
	duplicates := 0
	for id := range all {
		pids := byRun[id]
		switch {
		case len(pids) == 1:
		case len(pids) == 2 && (pids[0] == victimPID) != (pids[1] == victimPID) && leased[id]:
			// At-least-once for an attempt: the victim died between the
			// step's side effect and its record; a survivor ran it again.
			duplicates++
		default:
			t.Errorf("step of run %s executed %d times, by %v", id, len(pids), pids)
		}
	}
	t.Logf("%d runs, %d step executions by pid %v, %d repeated after the kill (the killed daemon's in-flight steps)", len(all), len(readLedgers(t, dir)), perPID, duplicates)
	if duplicates > workers {
		t.Errorf("%d steps ran twice, more than the killed daemon's %d workers had in flight", duplicates, workers)
	}
}

// leasedBy returns the unfinished runs leased by the daemon with pid, read
// straight from Redis (the default prefix).
func leasedBy(t *testing.T, addr string, pid int) map[string]bool {
	t.Helper()
	ctx := context.Background()
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	ids, err := rdb.ZRange(ctx, "cyberdrew:{engine}:queue", 0, -1).Result()
	if err != nil {
		t.Fatalf("read the queue: %v", err)
	}
	pipe := rdb.Pipeline()
	cmds := make([]*goredis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, "cyberdrew:{engine}:run:"+id, "owner", "status")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("read runs: %v", err)
	}
	mark := ":" + strconv.Itoa(pid) + ":"
	out := map[string]bool{}
	for i, c := range cmds {
		v := c.Val()
		owner, _ := v[0].(string)
		status, _ := v[1].(string)
		if strings.Contains(owner, mark) && status == string(store.StatusRunning) {
			out[ids[i]] = true
		}
	}
	return out
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[int64]V) []int64 {
	keys := make([]int64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// TestCronFiresEachTickOnceAcrossDaemons runs a cron every second on three
// daemons sharing one redis-server for two ticks (a few seconds of real
// time): each tick makes exactly one run, none is missed, and each run's
// step runs once. TestChaosCronTwentyTicksAcrossDaemons (-tags chaos) runs
// twenty.
func TestCronFiresEachTickOnceAcrossDaemons(t *testing.T) {
	t.Parallel()
	cronAcrossDaemons(t, 2)
}

// cronAcrossDaemons counts ticks runs completed after three daemons are up,
// then checks the ledger and Redis once every daemon is killed.
func cronAcrossDaemons(t *testing.T, ticks int) {
	srv := redistest.StartT(t, false)
	dir := t.TempDir()
	var daemons []serveChild
	for range 3 {
		daemons = append(daemons, spawnServe(t, dir, "cron", "--store", "redis://"+srv.Addr))
	}
	c := client{t: t, base: daemons[0].base}
	changes := c.stream("")

	// Count the ticks' runs as they complete once every daemon is up.
	completed := map[string]bool{}
	deadline := time.After(time.Duration(ticks)*time.Second + 15*time.Second)
	for len(completed) < ticks {
		select {
		case ch, ok := <-changes:
			if !ok {
				t.Fatal("stream ended")
			}
			if ch.Kind == store.ChangeRun && ch.FunctionID == cronFunction && ch.Status.Finished() {
				if ch.Status != store.StatusCompleted {
					t.Fatalf("cron run %s ended %s", ch.RunID, ch.Status)
				}
				completed[ch.RunID] = true
			}
		case <-deadline:
			t.Fatalf("only %d cron runs completed", len(completed))
		}
	}
	for _, d := range daemons {
		d.cmd.Process.Kill()
		d.cmd.Wait()
	}

	// Every daemon is gone: the ledger and Redis are final.
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rdb.Close()
	runsPerTick := map[int64]int{}
	execsPerRun := map[string]int{}
	pids := map[string]int{}
	for _, f := range readLedgers(t, dir) {
		tick, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("ledger line %v", f)
		}
		if execsPerRun[f[2]]++; execsPerRun[f[2]] == 1 {
			runsPerTick[tick]++
		}
		pids[f[3]]++
	}
	for id, n := range execsPerRun {
		if n != 1 {
			t.Errorf("the step of cron run %s executed %d times", id, n)
		}
	}
	// Runs created but not yet executed when the daemons died count too.
	ids, err := rdb.ZRange(context.Background(), "cyberdrew:{engine}:runs:fn:"+cronFunction, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	seq := sortedKeys(runsPerTick)
	first, last := seq[0], seq[len(seq)-1]
	missed := 0
	for tick := first; tick <= last; tick++ {
		switch n := runsPerTick[tick]; n {
		case 1:
		case 0:
			missed++
			t.Errorf("tick %d fired no run", tick)
		default:
			t.Errorf("tick %d fired %d runs", tick, n)
		}
	}
	t.Logf("%d ticks from %d to %d: %d runs in Redis, %d executed (by pid %v), %d missed",
		last-first+1, first, last, len(ids), len(execsPerRun), pids, missed)
	if len(ids) < len(execsPerRun) || len(ids) > len(execsPerRun)+3 {
		t.Errorf("%d cron runs in Redis for %d executed: duplicates", len(ids), len(execsPerRun))
	}
}

// TestKilledDaemonsLongRunsAreTakenOverAtTheDefaultLease kills, with
// SIGKILL, a daemon holding 200 runs in a long step while a second daemon
// idles on the same Redis, both with the default lease: the survivor is
// woken by the lapsing leases (not a poll), completes every run, and runs
// no completed step again. It logs how long the takeover took.
func TestKilledDaemonsLongRunsAreTakenOverAtTheDefaultLease(t *testing.T) {
	t.Parallel()
	const runs = 200
	srv := redistest.StartT(t, false)
	dir := t.TempDir()
	victim := spawnServe(t, dir, "takeover-victim", "--store", "redis://"+srv.Addr, "--workers", strconv.Itoa(runs))
	c := client{t: t, base: victim.base}
	changes := c.stream("")
	body := make([]string, runs)
	for i := range body {
		body[i] = fmt.Sprintf(`{"name":"test/long","data":{"n":%d}}`, i)
	}
	var acc struct {
		IDs []string `json:"ids"`
	}
	if code := c.do("POST", "/e/k", "["+strings.Join(body, ",")+"]", &acc); code != 200 || len(acc.IDs) != runs {
		t.Fatalf("intake: %d, %d ids", code, len(acc.IDs))
	}
	// Every run has recorded its first step and is in its long one.
	firsts := func() int {
		n := 0
		for _, f := range readLedgers(t, dir) {
			if f[0] == "first" {
				n++
			}
		}
		return n
	}
	guard := time.NewTicker(time.Second)
	defer guard.Stop()
	deadline := time.After(30 * time.Second)
	for firsts() < runs {
		select {
		case <-changes:
		case <-guard.C:
		case <-deadline:
			t.Fatalf("only %d of %d runs took their first step", firsts(), runs)
		}
	}
	survivor := spawnServe(t, dir, "takeover", "--store", "redis://"+srv.Addr, "--workers", strconv.Itoa(runs))
	c = client{t: t, base: survivor.base}
	changes = c.stream("")
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	victim.cmd.Wait()
	killedAt := time.Now()
	deadline = time.After(30 * time.Second)
	completed := map[string]bool{}
	for len(completed) < runs {
		select {
		case ch, ok := <-changes:
			if !ok {
				t.Fatal("stream ended")
			}
			if ch.Kind == store.ChangeRun && ch.FunctionID == takeoverFunction && ch.Status == store.StatusCompleted {
				completed[ch.RunID] = true
			}
		case <-guard.C:
			// A lagging stream may drop changes: read the API too.
			for id := range listRuns(c, "function="+takeoverFunction+"&status=Completed") {
				completed[id] = true
			}
		case <-deadline:
			t.Fatalf("%d of %d runs completed after the kill", len(completed), runs)
		}
	}
	t.Logf("the survivor completed the killed daemon's %d runs %v after the kill (default lease %v)",
		runs, time.Since(killedAt).Round(time.Millisecond), config.DefaultLease)
	perRun := map[string]int{}
	for _, f := range readLedgers(t, dir) {
		if f[0] == "first" {
			perRun[f[1]]++
		}
	}
	if len(perRun) != runs {
		t.Errorf("%d runs recorded a first step, want %d", len(perRun), runs)
	}
	for id, n := range perRun {
		if n != 1 {
			t.Errorf("completed step first of run %s executed %d times", id, n)
		}
	}
}
