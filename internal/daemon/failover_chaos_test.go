//go:build chaos

package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// TestChaosSentinelFailoverUnderLoad sends events through a daemon on a
// redis+sentinel:// URL (a master, a replica, three sentinels), forces a
// failover (SENTINEL FAILOVER) and keeps sending. With
// --redis-min-replicas 1, every acknowledged event must be stored after
// the failover and its run must complete, once. Without it the test
// counts the acknowledged events the failover lost (it may lose none on
// loopback) and logs them. Both report events/s before, during and after.
func TestChaosSentinelFailoverUnderLoad(t *testing.T) {
	for _, minReplicas := range []int{1, 0} {
		t.Run(fmt.Sprintf("min-replicas-%d", minReplicas), func(t *testing.T) {
			topo := redistest.StartSentinelT(t)
			failoverUnderLoad(t, topo.URL(0), topo.Failover, minReplicas, 1)
		})
	}
}

// TestChaosClusterFailoverUnderLoad is TestChaosSentinelFailoverUnderLoad
// on a Redis Cluster (three masters, three replicas): the failover is a
// CLUSTER FAILOVER on the replica of the master serving the engine's slot;
// with --redis-partitions 12, of the master serving partition 0's, where
// the load's events are (they have ids: store.Publication.Pinned).
func TestChaosClusterFailoverUnderLoad(t *testing.T) {
	for _, c := range []struct{ minReplicas, partitions int }{{1, 1}, {0, 1}, {1, 12}} {
		name := fmt.Sprintf("min-replicas-%d", c.minReplicas)
		if c.partitions > 1 {
			name += fmt.Sprintf("-partitions-%d", c.partitions)
		}
		t.Run(name, func(t *testing.T) {
			cl := redistest.StartClusterT(t)
			slot := "cyberdrew:{engine}:"
			if c.partitions > 1 {
				slot = fmt.Sprintf("cyberdrew:{engine:0/%d}:", c.partitions)
			}
			failover := func(ctx context.Context) (string, error) { return cl.Failover(ctx, slot) }
			failoverUnderLoad(t, cl.URL(), failover, c.minReplicas, c.partitions)
		})
	}
}

// failoverUnderLoad loads a daemon on url, calls failover (which returns
// the new master's address once it serves) and keeps loading.
func failoverUnderLoad(t *testing.T, url string, failover func(context.Context) (string, error), minReplicas, partitions int) {
	const (
		senders = 4
		phase   = 3 * time.Second // the load before and after the failover
	)
	cfg := testConfig(t.TempDir())
	cfg.Store = url
	cfg.Lease = 2 * time.Second
	cfg.RedisMinReplicas = minReplicas
	cfg.RedisPartitions = partitions
	cfg.RedisReplicaTimeout = 500 * time.Millisecond
	var (
		execMu sync.Mutex
		execs  = map[string]int{} // run id -> executions of its step
	)
	fns := []engine.Function{{
		ID: "steady", Triggers: []engine.Trigger{{Event: "test/steady"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "work", func(ctx context.Context) (string, error) {
				execMu.Lock()
				execs[r.ID]++
				execMu.Unlock()
				return r.ID, nil
			})
		},
	}}
	c := client{t: t, base: start(t, cfg, fns)}

	// Each sender sends events with ids of its own and resends an event
	// answered 503 with the same id, as the answer advises, until it is
	// acknowledged.
	type ack struct {
		id string // the server's id
		at time.Time
	}
	var (
		mu       sync.Mutex
		acked    []ack
		codes    = map[int]int{}
		problems []string
	)
	ctx, stop := context.WithCancel(context.Background())
	httpc := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; {
				body := fmt.Sprintf(`{"id":"ev-%d-%d","name":"test/steady","data":{"s":%d,"i":%d}}`, s, i, s, i)
				res, err := httpc.Post(c.base+"/e/k", "application/json", strings.NewReader(body))
				if err != nil {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("intake: %v", err))
					mu.Unlock()
					return
				}
				var acc struct {
					IDs []string `json:"ids"`
				}
				json.NewDecoder(res.Body).Decode(&acc)
				res.Body.Close()
				mu.Lock()
				codes[res.StatusCode]++
				switch res.StatusCode {
				case 200:
					acked = append(acked, ack{acc.IDs[0], time.Now()})
					i++
				case 503:
				default:
					problems = append(problems, fmt.Sprintf("intake answered %d", res.StatusCode))
				}
				mu.Unlock()
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	began := time.Now()
	time.Sleep(phase) // the load before the failover: a measurement, not a wait for a condition
	failedAt := time.Now()
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	newMaster, err := failover(fctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	switched := time.Now()
	// "During" lasts from the failover until the first event acknowledged
	// after the switch (with min-replicas, the new master needs a replica
	// first: the demoted one, once the sentinels turn it into one).
	ackedSince := func(t0 time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > 0 && acked[len(acked)-1].at.After(t0)
	}
	for guard := time.Now().Add(60 * time.Second); !ackedSince(switched); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(guard) {
			t.Fatalf("no event acknowledged within 60 s of the switch to %s", newMaster)
		}
	}
	duringEnd := time.Now()
	time.Sleep(phase) // the load after: a measurement
	stop()
	wg.Wait()
	ended := time.Now()

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	var before, during, after int
	for _, a := range acked {
		switch {
		case a.at.Before(failedAt):
			before++
		case a.at.Before(duringEnd):
			during++
		default:
			after++
		}
	}
	rate := func(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

	// Every acknowledged event must be on the new master, with one run
	// that completes. Events answered 503 and never resent (when the load
	// stopped) may be stored too, with their runs: they are not counted.
	lost := 0
	var runIDs []string
	for _, a := range acked {
		var runs runsAnswer
		switch code := c.do("GET", "/v1/events/"+a.id+"/runs", "", &runs); {
		case code == 404:
			lost++
		case code != 200 || len(runs.Data) != 1:
			t.Errorf("acknowledged event %s: %d with %d runs, want one", a.id, code, len(runs.Data))
		default:
			runIDs = append(runIDs, runs.Data[0].RunID)
		}
	}
	if minReplicas > 0 && lost > 0 {
		t.Errorf("%d of %d acknowledged events lost in the failover with --redis-min-replicas %d", lost, len(acked), minReplicas)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		runs := listRuns(c, "function=steady")
		pending := 0
		for _, id := range runIDs {
			if runs[id] != "Completed" {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d runs of acknowledged events not completed 60 s after the load", pending)
		}
		time.Sleep(50 * time.Millisecond) // a guard between listings
	}
	execMu.Lock()
	twice := 0
	for _, n := range execs {
		if n > 1 {
			twice++
		}
	}
	execMu.Unlock()
	t.Logf("min-replicas %d, partitions %d: answers %v; acknowledged %d events, lost %d; events/s before %.0f, during %.0f (%v from the failover to the first acknowledgement after the switch to %s, which took %v), after %.0f; %d runs of acknowledged events all Completed, %d runs ran their step more than once",
		minReplicas, partitions, codes, len(acked), lost,
		rate(before, failedAt.Sub(began)), rate(during, duringEnd.Sub(failedAt)), duringEnd.Sub(failedAt).Round(time.Millisecond), newMaster, switched.Sub(failedAt).Round(time.Millisecond),
		rate(after, ended.Sub(duringEnd)), len(runIDs), twice)
}
