package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// The crash test runs the daemon in a child process (this test binary,
// re-executed) so that it can be killed with SIGKILL.
const childEnv = "CYBERDREW_TEST_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	if dir := os.Getenv(serveChildEnv); dir != "" {
		os.Exit(runServeChild(dir))
	}
	os.Exit(m.Run())
}

// ledgerFunction's runs take a step "before", wait for a "test/crashy.go"
// event with their data.i, and take a step "after". Each step execution
// appends "<step> <run> <token>" to dir/ledger and returns the token, unique
// to the execution and naming the daemon's life. "after" also prints
// "AFTER <run>" on stdout, for the parent to see it in flight; in life 1 it
// then works until the process dies.
func ledgerFunction(dir, life string) engine.Function {
	var mu sync.Mutex
	var seq atomic.Int64
	record := func(what, runID string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		token := fmt.Sprintf("%s-%d", life, seq.Add(1))
		f, err := os.OpenFile(filepath.Join(dir, "ledger"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return "", err
		}
		defer f.Close()
		if _, err := fmt.Fprintf(f, "%s %s %s\n", what, runID, token); err != nil {
			return "", err
		}
		return token, f.Sync()
	}
	return engine.Function{
		ID: "crashy", Triggers: []engine.Trigger{{Event: "test/crashy"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			if _, err := engine.Step(ctx, r, "before", func(ctx context.Context) (string, error) { return record("before", r.ID) }); err != nil {
				return nil, err
			}
			if _, err := r.WaitForEvent(ctx, "go", engine.WaitOptions{Event: "test/crashy.go", Match: "data.i", Timeout: time.Hour}); err != nil {
				return nil, err
			}
			return engine.Step(ctx, r, "after", func(ctx context.Context) (string, error) {
				token, err := record("after", r.ID)
				if err != nil {
					return "", err
				}
				fmt.Printf("AFTER %s\n", r.ID)
				if life == "1" {
					<-ctx.Done()
					return "", ctx.Err()
				}
				return token, nil
			})
		},
	}
}

func runChild(dir string) int {
	cfg := testConfig(dir)
	cfg.Addr = os.Getenv(childEnv + "_ADDR")
	cfg.Store = os.Getenv(childEnv + "_STORE") // empty: SQLite in dir
	ctx := context.Background()
	fn := ledgerFunction(dir, os.Getenv(childEnv+"_LIFE"))
	d, err := daemon.New(ctx, cfg, slog.New(slog.DiscardHandler), daemon.Options{Functions: []engine.Function{fn}})
	if err == nil {
		err = d.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ADDR %s\n", d.Addr())
	select {}
}

// spawn starts life number life of a child daemon on dir, with its store
// at storeURL ("" for SQLite in dir), and returns its base URL, the lines
// it prints after its address, and its process.
func spawn(t *testing.T, dir, storeURL, life string) (string, <-chan string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childEnv+"_ADDR=127.0.0.1:0", childEnv+"_LIFE="+life,
		childEnv+"_STORE="+storeURL)
	base, lines := startChildLines(t, cmd)
	return base, lines, cmd
}

// startChild starts a child daemon (killed when the test ends) and returns
// its base URL, which it prints first as "ADDR host:port".
func startChild(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	base, _ := startChildLines(t, cmd)
	return base
}

// startChildLines is startChild that also returns the lines the child
// prints after its address (a line nobody reads in time is dropped).
func startChildLines(t *testing.T, cmd *exec.Cmd) (string, <-chan string) {
	t.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	got, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		t.Fatalf("child daemon did not start: %q %v", line, err)
	}
	lines := make(chan string, 1024)
	go func() {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			select {
			case lines <- strings.TrimSpace(line):
			default:
			}
		}
	}()
	return "http://" + got, lines
}

// runSteps returns a run's status and its steps' outputs by step id.
func runSteps(c client, id string) (string, map[string]string) {
	var one struct {
		Data struct {
			Status string `json:"status"`
			Steps  []struct {
				ID     string          `json:"id"`
				Output json.RawMessage `json:"output"`
			} `json:"steps"`
		} `json:"data"`
	}
	if code := c.do("GET", "/v1/runs/"+id, "", &one); code != 200 {
		c.t.Fatalf("run %s: %d", id, code)
	}
	out := map[string]string{}
	for _, s := range one.Data.Steps {
		out[s.ID] = string(s.Output)
	}
	return one.Data.Status, out
}

// sendGo sends the events that end the waits of runs from to to-1.
func sendGo(c client, from, to int) {
	var batch []string
	for i := from; i < to; i++ {
		batch = append(batch, fmt.Sprintf(`{"name":"test/crashy.go","data":{"i":%d}}`, i))
	}
	if code := c.do("POST", "/e/k", "["+strings.Join(batch, ",")+"]", nil); code != 200 {
		c.t.Fatalf("sending go events: %d", code)
	}
}

// TestKillDashNineKeepsTheDeliveryContract kills a daemon with SIGKILL
// while fifty runs have recorded a step: most wait for an event, and as
// many as it has workers are in flight in their second step. A restarted
// daemon must keep exactly what DESIGN.md §2 Delivery promises: every step
// attempt executes at least once (the interrupted ones again), a step's
// recorded result is never made again nor replaced, every acknowledged
// event survives, and the runs in flight are taken over once their lease
// lapses. The test waits on what it observes (statuses on the stream, the
// steps' own "AFTER" lines), never on a timer. It runs on both stores: on
// Redis the waits go through the scripts that look for a run's waits only
// once it is marked as waiting (layout 6).
func TestKillDashNineKeepsTheDeliveryContract(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		killDashNine(t, "")
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		killDashNine(t, redistest.StartT(t, true).URL(0))
	})
}

// killDashNine is TestKillDashNineKeepsTheDeliveryContract on the store at
// storeURL ("" for SQLite).
func killDashNine(t *testing.T, storeURL string) {
	const runs, inFlight = 50, 4 // inFlight: testConfig's workers
	dir := t.TempDir()
	base, lines, cmd := spawn(t, dir, storeURL, "1")
	c := client{t: t, base: base}
	changes := c.stream("")

	var batch []string
	for i := range runs {
		batch = append(batch, fmt.Sprintf(`{"name":"test/crashy","data":{"i":%d}}`, i))
	}
	var acc struct {
		IDs []string `json:"ids"`
	}
	if code := c.do("POST", "/e/k", "["+strings.Join(batch, ",")+"]", &acc); code != 200 || len(acc.IDs) != runs {
		t.Fatalf("intake: %d, %d ids", code, len(acc.IDs))
	}
	var runIDs []string
	for _, id := range acc.IDs {
		var answer runsAnswer
		c.do("GET", "/v1/events/"+id+"/runs", "", &answer)
		if len(answer.Data) != 1 {
			t.Fatalf("event %s has %d runs", id, len(answer.Data))
		}
		runIDs = append(runIDs, answer.Data[0].RunID)
	}
	waiting := map[string]bool{}
	deadline := time.After(30 * time.Second) // guards against a hang only
	for len(waiting) < runs {
		select {
		case ch := <-changes:
			if ch.Kind == store.ChangeRun && ch.Status == store.StatusSleeping {
				waiting[ch.RunID] = true
			}
		case <-deadline:
			t.Fatalf("only %d of %d runs reached their wait", len(waiting), runs)
		}
	}
	// Every run has recorded "before": remember what.
	before := map[string]string{}
	for _, id := range runIDs {
		_, steps := runSteps(c, id)
		if before[id] = steps["before"]; before[id] == "" {
			t.Fatalf("run %s is waiting without a recorded before step", id)
		}
	}
	// Release the first runs and see their "after" step in flight.
	sendGo(c, 0, inFlight)
	started := map[string]bool{}
	for len(started) < inFlight {
		select {
		case line := <-lines:
			if id, ok := strings.CutPrefix(line, "AFTER "); ok {
				started[id] = true
			}
		case <-deadline:
			t.Fatalf("only %d of %d after steps started", len(started), inFlight)
		}
	}
	// Events acknowledged right before the kill must all survive it.
	var acked []string
	for i := range 20 {
		var one struct {
			IDs []string `json:"ids"`
		}
		c.do("POST", "/e/k", fmt.Sprintf(`[{"name":"test/other","data":{"i":%d}},{"name":"test/other"}]`, i), &one)
		acked = append(acked, one.IDs...)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	base, _, _ = spawn(t, dir, storeURL, "2")
	c = client{t: t, base: base}
	changes = c.stream("")
	restarted := time.Now()
	sendGo(c, inFlight, runs)
	pending := map[string]bool{}
	for _, id := range runIDs {
		if status, _ := runSteps(c, id); status != "Completed" {
			pending[id] = true
		}
	}
	deadline = time.After(30 * time.Second) // guards against a hang only
	for len(pending) > 0 {
		select {
		case ch := <-changes:
			if ch.Kind == store.ChangeRun && ch.Status.Finished() && pending[ch.RunID] {
				if ch.Status != store.StatusCompleted {
					t.Fatalf("run %s ended %s after the restart", ch.RunID, ch.Status)
				}
				delete(pending, ch.RunID)
			}
		case <-deadline:
			t.Fatalf("%d runs did not complete after the restart", len(pending))
		}
	}
	t.Logf("the restarted daemon completed every run %v after it started (lease %v)", time.Since(restarted).Round(time.Millisecond), config.DefaultLease)

	ledger, err := os.ReadFile(filepath.Join(dir, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	execs := map[string][]string{} // "<step> <run>" -> tokens
	for _, line := range strings.Split(strings.TrimSpace(string(ledger)), "\n") {
		f := strings.Fields(line)
		execs[f[0]+" "+f[1]] = append(execs[f[0]+" "+f[1]], f[2])
	}
	for _, id := range runIDs {
		status, steps := runSteps(c, id)
		if status != "Completed" {
			t.Errorf("run %s is %s", id, status)
		}
		// A result recorded before the kill is neither made again nor
		// replaced: no execution in life 2, the same output.
		got := execs["before "+id]
		if !slices.ContainsFunc(got, func(tok string) bool { return `"`+tok+`"` == before[id] }) ||
			slices.ContainsFunc(got, func(tok string) bool { return strings.HasPrefix(tok, "2-") }) ||
			steps["before"] != before[id] {
			t.Errorf("run %s: before executed as %v, recorded %s before the kill and %s after", id, got, before[id], steps["before"])
		}
		// Every attempt executes at least once; the result recorded is one
		// that an execution returned, from the life that completed it.
		after := execs["after "+id]
		if len(after) == 0 || steps["after"] != `"`+after[len(after)-1]+`"` || !strings.HasPrefix(after[len(after)-1], "2-") {
			t.Errorf("run %s: after executed as %v, recorded %s", id, after, steps["after"])
		}
		// The attempts in flight at the kill executed again after it.
		if started[id] && !strings.HasPrefix(after[0], "1-") {
			t.Errorf("run %s was in flight at the kill: after executed as %v, want in both lives", id, after)
		}
	}
	for _, id := range acked {
		if code := c.do("GET", "/v1/events/"+id, "", nil); code != 200 {
			t.Errorf("acknowledged event %s lost: %d", id, code)
		}
	}
}
