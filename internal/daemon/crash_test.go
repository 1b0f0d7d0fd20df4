package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
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

// ledgerFunction records every execution of its steps in dir/ledger, so the
// parent can count them across crashes.
func ledgerFunction(dir string) engine.Function {
	var mu sync.Mutex
	record := func(what, runID string) error {
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(filepath.Join(dir, "ledger"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := fmt.Fprintf(f, "%s %s\n", what, runID); err != nil {
			return err
		}
		return f.Sync()
	}
	return engine.Function{
		ID: "crashy", Triggers: []engine.Trigger{{Event: "test/crashy"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			if _, err := engine.Step(ctx, r, "before", func(ctx context.Context) (bool, error) { return true, record("before", r.ID) }); err != nil {
				return nil, err
			}
			if err := r.Sleep(ctx, "nap", 1500*time.Millisecond); err != nil {
				return nil, err
			}
			if _, err := engine.Step(ctx, r, "after", func(ctx context.Context) (bool, error) { return true, record("after", r.ID) }); err != nil {
				return nil, err
			}
			return "ok", nil
		},
	}
}

func runChild(dir string) int {
	cfg := testConfig(dir)
	cfg.Addr = os.Getenv(childEnv + "_ADDR")
	ctx := context.Background()
	d, err := daemon.New(ctx, cfg, slog.New(slog.DiscardHandler), daemon.Options{Functions: []engine.Function{ledgerFunction(dir)}})
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

// spawn starts a child daemon on dir and returns its base URL and process.
func spawn(t *testing.T, dir, addr string) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, childEnv+"_ADDR="+addr)
	return startChild(t, cmd), cmd
}

// startChild starts a child daemon (killed when the test ends) and returns
// its base URL, which it prints first as "ADDR host:port".
func startChild(t *testing.T, cmd *exec.Cmd) string {
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
	line, err := bufio.NewReader(out).ReadString('\n')
	got, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		t.Fatalf("child daemon did not start: %q %v", line, err)
	}
	return "http://" + got
}

func TestKillDashNineLosesNothingAndRepeatsNoStep(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base, cmd := spawn(t, dir, "127.0.0.1:0")
	c := client{t: t, base: base}
	changes := c.stream("")

	// Fifty runs that will be asleep when the daemon dies.
	var batch []string
	for i := range 50 {
		batch = append(batch, fmt.Sprintf(`{"name":"test/crashy","data":{"i":%d}}`, i))
	}
	var acc struct {
		IDs []string `json:"ids"`
	}
	if code := c.do("POST", "/e/k", "["+strings.Join(batch, ",")+"]", &acc); code != 200 || len(acc.IDs) != 50 {
		t.Fatalf("intake: %d, %d ids", code, len(acc.IDs))
	}
	var runIDs []string
	for _, id := range acc.IDs {
		var runs runsAnswer
		c.do("GET", "/v1/events/"+id+"/runs", "", &runs)
		if len(runs.Data) != 1 {
			t.Fatalf("event %s has %d runs", id, len(runs.Data))
		}
		runIDs = append(runIDs, runs.Data[0].RunID)
	}
	asleep := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(asleep) < len(runIDs) {
		select {
		case ch := <-changes:
			if ch.Kind == store.ChangeRun && ch.Status == store.StatusSleeping {
				asleep[ch.RunID] = true
			}
		case <-deadline:
			t.Fatalf("only %d of %d runs fell asleep", len(asleep), len(runIDs))
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

	base, _ = spawn(t, dir, "127.0.0.1:0")
	c = client{t: t, base: base}
	changes = c.stream("")
	pending := map[string]bool{}
	for _, id := range runIDs {
		var one struct {
			Data struct {
				Status string `json:"status"`
			} `json:"data"`
		}
		c.do("GET", "/v1/runs/"+id, "", &one)
		if one.Data.Status != "Completed" {
			pending[id] = true
		}
	}
	deadline = time.After(15 * time.Second)
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
	ledger, err := os.ReadFile(filepath.Join(dir, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(ledger)), "\n") {
		counts[line]++
	}
	for _, id := range runIDs {
		for _, step := range []string{"before", "after"} {
			if n := counts[step+" "+id]; n != 1 {
				t.Errorf("step %s of run %s executed %d times, want 1", step, id, n)
			}
		}
	}
	for _, id := range acked {
		if code := c.do("GET", "/v1/events/"+id, "", nil); code != 200 {
			t.Errorf("acknowledged event %s lost: %d", id, code)
		}
	}
}
