//go:build chaos

package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
	redisstore "github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// The chaos tests (go test -tags chaos ./internal/daemon/ -run Chaos) send
// a few thousand events while the daemons serving them are SIGKILLed at
// random moments and restarted, then check that nothing acknowledged was
// lost and that no recorded step ran twice.
const (
	chaosEvents = 3000
	chaosBatch  = 20
	chaosKills  = 10
	chaosLease  = 2 * time.Second
)

func TestChaosSQLite(t *testing.T) {
	dir := t.TempDir()
	open := func() (store.Store, error) {
		return sqlite.Open(context.Background(), filepath.Join(dir, "cyberdrew.db"), sqlite.Options{})
	}
	runChaos(t, dir, 1, open, "--lease", chaosLease.String(), "--workers", "16")
}

func TestChaosRedis(t *testing.T) {
	srv := redistest.StartT(t, true) // appendonly yes, appendfsync always
	dir := t.TempDir()
	open := func() (store.Store, error) {
		return redisstore.Open(context.Background(), "redis://"+srv.Addr, redisstore.Options{})
	}
	runChaos(t, dir, 2, open, "--store", "redis://"+srv.Addr, "--lease", chaosLease.String(), "--workers", "16")
}

// fleet is the daemons of a chaos test, replaced as they are killed.
type fleet struct {
	mu      sync.Mutex
	members []serveChild
	killed  map[string]bool // pids
	// recorded holds the step results a killed daemon had recorded when
	// it died, by value ("<pid>-<n>").
	recorded map[string]bool
}

func (f *fleet) pick() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.members[rand.IntN(len(f.members))].base
}

// runChaos runs n daemons on dir with args, sends chaosEvents events from
// a driver goroutine, and kills daemons at random (one, or all of them)
// until it has done so chaosKills times and every event is sent.
// open opens the daemons' store from the test process, to see what a
// killed daemon had recorded.
func runChaos(t *testing.T, dir string, n int, open func() (store.Store, error), args ...string) {
	started := time.Now()
	f := &fleet{killed: map[string]bool{}, recorded: map[string]bool{}}
	for range n {
		f.members = append(f.members, spawnServe(t, dir, "chaos", args...))
	}

	acked := make(chan []string, chaosEvents)
	driverDone := make(chan error, 1)
	go func() { driverDone <- drive(f, acked) }()

	kills, sent := 0, false
	var driverErr error
	for kills < chaosKills || !sent {
		select {
		case driverErr = <-driverDone:
			sent = true
			if driverErr != nil {
				t.Fatalf("driver: %v", driverErr)
			}
			continue
		case <-time.After(time.Duration(300+rand.IntN(1700)) * time.Millisecond):
		}
		victims := []int{rand.IntN(n)}
		if n > 1 && rand.IntN(3) == 0 {
			victims = []int{0, 1}
		}
		for _, i := range victims {
			f.mu.Lock()
			old := f.members[i]
			f.mu.Unlock()
			old.cmd.Process.Kill()
			old.cmd.Wait()
			kills++
			snapshot(t, dir, old.cmd.Process.Pid, open, f.recorded)
			next := spawnServe(t, dir, "chaos", args...)
			f.mu.Lock()
			f.killed[fmt.Sprint(old.cmd.Process.Pid)] = true
			f.members[i] = next
			f.mu.Unlock()
		}
	}
	close(acked)
	var eventIDs []string
	for ids := range acked {
		eventIDs = append(eventIDs, ids...)
	}
	t.Logf("%d kills survived while %d events were acknowledged, in %v", kills, len(eventIDs), time.Since(started).Round(time.Millisecond))

	// Every daemon alive: wait for the queue to drain.
	c := client{t: t, base: f.pick()}
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var all map[string]string
	for {
		all = listRuns(c, "function="+pacedFunction)
		pending := 0
		for _, st := range all {
			if st != "Completed" {
				pending++
			}
		}
		if pending == 0 && len(all) >= len(eventIDs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d runs not completed after the last kill", pending, len(all))
		}
		<-tick.C
	}

	// Every acknowledged event has its one run, completed.
	var mu sync.Mutex
	var wg sync.WaitGroup
	ids := make(chan string)
	for range 8 {
		wg.Go(func() {
			for id := range ids {
				var runs runsAnswer
				err := getJSON(c.base+"/v1/events/"+id+"/runs", &runs)
				mu.Lock()
				switch {
				case err != nil:
					t.Errorf("runs of event %s: %v", id, err)
				case len(runs.Data) != 1:
					t.Errorf("acknowledged event %s has %d runs", id, len(runs.Data))
				case runs.Data[0].Status != "Completed" || all[runs.Data[0].RunID] != "Completed":
					t.Errorf("run %s of event %s is %s", runs.Data[0].RunID, id, runs.Data[0].Status)
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range eventIDs {
		ids <- id
	}
	close(ids)
	wg.Wait()

	// No step whose result was recorded executed again. A step executing
	// when its daemon was killed may run again (at-least-once for an
	// attempt): that daemon never recorded its result.
	type execution struct{ value, pid string }
	byStep := map[string][]execution{} // "<what> <run>"
	for _, l := range readLedgers(t, dir) {
		if l[0] == "work" || l[0] == "after" {
			byStep[l[0]+" "+l[1]] = append(byStep[l[0]+" "+l[1]], execution{l[2], l[3]})
		}
	}
	strict, repeated := 0, 0
	for run := range all {
		var detail struct {
			Data struct {
				Steps []struct {
					ID     string          `json:"id"`
					Output json.RawMessage `json:"output"`
				} `json:"steps"`
			} `json:"data"`
		}
		fetched := false
		for _, step := range []string{"work", "after"} {
			execs := byStep[step+" "+run]
			switch len(execs) {
			case 0:
				t.Errorf("step %s of completed run %s never executed", step, run)
				continue
			case 1:
				continue
			}
			if !fetched {
				if err := getJSON(c.base+"/v1/runs/"+run, &detail); err != nil {
					t.Fatal(err)
				}
				fetched = true
			}
			var recorded string
			for _, s := range detail.Data.Steps {
				if s.ID == step {
					json.Unmarshal(s.Output, &recorded)
				}
			}
			// Every execution but the recorded one must be a killed
			// daemon's, once each, whose result was not recorded when
			// it died.
			ok, seen := true, map[string]bool{}
			for _, e := range execs {
				if e.value == recorded {
					continue
				}
				if !f.killed[e.pid] || seen[e.pid] || f.recorded[e.value] {
					ok = false
				}
				seen[e.pid] = true
			}
			if ok && len(seen) == len(execs)-1 {
				repeated++
				continue
			}
			strict++
			t.Errorf("step %s of run %s executed %d times %v, recorded %q", step, run, len(execs), execs, recorded)
		}
	}
	t.Logf("chaos: %d kills survived, %d events acknowledged, %d runs checked, %d duplicates of a recorded step (%d recorded results of killed daemons watched), %d steps re-run after their daemon was killed mid-step (at-least-once), %v in all",
		kills, len(eventIDs), len(all), strict, len(f.recorded), repeated, time.Since(started).Round(time.Millisecond))
}

// snapshot adds to recorded the values of the steps that the killed
// daemon pid executed (its ledger) and whose result the store holds.
func snapshot(t *testing.T, dir string, pid int, open func() (store.Store, error), recorded map[string]bool) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("ledger-%d", pid)))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if f := strings.Fields(line); len(f) == 4 {
			runs[f[1]] = true
		}
	}
	st, err := open()
	if err != nil {
		t.Fatalf("open the store after a kill: %v", err)
	}
	defer st.Close()
	prefix := fmt.Sprintf("%d-", pid)
	for run := range runs {
		steps, err := st.Steps(context.Background(), run)
		if err != nil {
			t.Fatalf("steps of run %s: %v", run, err)
		}
		for _, s := range steps {
			var v string
			if s.Status == store.StatusCompleted && json.Unmarshal(s.Output, &v) == nil && strings.HasPrefix(v, prefix) {
				recorded[v] = true
			}
		}
	}
}

// drive posts chaosEvents events in batches, about 200 a second, to any
// live daemon, retrying a batch until a daemon acknowledges it, and
// reports each acknowledged batch's ids.
func drive(f *fleet, acked chan<- []string) error {
	cl := &http.Client{Timeout: 10 * time.Second}
	pace := time.NewTicker(chaosBatch * 5 * time.Millisecond)
	defer pace.Stop()
	for sent := 0; sent < chaosEvents; sent += chaosBatch {
		body := make([]string, chaosBatch)
		for i := range body {
			body[i] = fmt.Sprintf(`{"name":"test/paced","data":{"ms":%d}}`, rand.IntN(60))
		}
		payload := []byte("[" + strings.Join(body, ",") + "]")
		giveUp := time.Now().Add(30 * time.Second)
		for {
			ids, err := post(cl, f.pick()+"/e/k", payload)
			if err == nil && len(ids) == chaosBatch {
				acked <- ids
				break
			}
			if time.Now().After(giveUp) {
				return fmt.Errorf("batch at %d not acknowledged: %v", sent, err)
			}
			<-pace.C // the daemon is restarting: try again shortly
		}
		<-pace.C
	}
	return nil
}

func post(cl *http.Client, url string, payload []byte) ([]string, error) {
	res, err := cl.Post(url, "application/json", bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("intake: %d %s", res.StatusCode, raw)
	}
	var acc struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(raw, &acc); err != nil {
		return nil, err
	}
	return acc.IDs, nil
}

func getJSON(url string, out any) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return errors.New(res.Status)
	}
	return json.NewDecoder(res.Body).Decode(out)
}
