package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// Event names of the benchmarks: benchTriggering starts the no-op function,
// benchPlain starts nothing.
const (
	benchTriggering = "bench/noop.requested"
	benchPlain      = "bench/plain.recorded"
)

// benchClients is how many HTTP clients post at once in BenchmarkIntakeHTTP.
const benchClients = 16

// benchEvent returns one event named name whose data is 100 bytes of JSON.
func benchEvent(b *testing.B, name string) []byte {
	b.Helper()
	data := `{"slug":"hello-world","path":"/blog/hello-world","referrer":"https://example.com/","pad":"`
	data += strings.Repeat("x", 100-len(data)-2) + `"}`
	if len(data) != 100 {
		b.Fatalf("data is %d bytes, want 100", len(data))
	}
	return []byte(`{"name":"` + name + `","data":` + data + `}`)
}

// benchDaemon is a real daemon on a loopback port with a real store, and a
// keep-alive client that talks to it.
type benchDaemon struct {
	d      *daemon.Daemon
	st     store.Store
	client *http.Client
	url    string          // of the event API
	redis  *goredis.Client // on Redis: reads INFO commandstats
}

// onEachStore runs bench on the embedded SQLite store and on a Redis of its
// own with appendonly and appendfsync always, so that both acknowledge an
// event only once it is on disk.
func onEachStore(b *testing.B, bench func(b *testing.B, storeURL string)) {
	b.Run("sqlite", func(b *testing.B) { bench(b, "") })
	b.Run("redis", func(b *testing.B) { bench(b, redistest.StartT(b, true).URL(0)) })
}

// redisCommands is the number of commands the Redis server has executed.
func (bd *benchDaemon) redisCommands(b *testing.B) int64 {
	b.Helper()
	n, err := redistest.Commands(b.Context(), bd.redis)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// startDaemon starts a daemon whose only function, "noop", is triggered by
// benchTriggering and calls onRun (when set) as it starts. The daemon stops
// when the benchmark ends.
func startDaemon(b *testing.B, storeURL string, onRun func()) *benchDaemon {
	b.Helper()
	noop := engine.Function{
		ID:       "noop",
		Triggers: []engine.Trigger{{Event: benchTriggering}},
		Handler: func(context.Context, *engine.Run) (any, error) {
			if onRun != nil {
				onRun()
			}
			return nil, nil
		},
	}
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	cfg.Retention = 0
	cfg.Store = storeURL
	ctx := context.Background()
	d, err := daemon.New(ctx, cfg, slog.New(slog.DiscardHandler), daemon.Options{Functions: []engine.Function{noop}})
	if err != nil {
		b.Fatalf("new daemon: %v", err)
	}
	if err := d.Start(ctx); err != nil {
		b.Fatalf("start daemon: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        2 * benchClients,
		MaxIdleConnsPerHost: 2 * benchClients,
	}}
	b.Cleanup(func() {
		client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			b.Errorf("stop daemon: %v", err)
		}
	})
	bd := &benchDaemon{d: d, st: d.Store(), client: client, url: "http://" + d.Addr() + "/e/bench-key"}
	if storeURL != "" {
		opts, err := goredis.ParseURL(storeURL)
		if err != nil {
			b.Fatal(err)
		}
		bd.redis = goredis.NewClient(opts)
		b.Cleanup(func() { bd.redis.Close() })
	}
	return bd
}

// post sends body to the event API and returns the ids it answers.
func (bd *benchDaemon) post(body []byte) ([]string, error) {
	resp, err := bd.client.Post(bd.url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	var out struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", raw, err)
	}
	return out.IDs, nil
}

// waitIdle returns once no run is pending, re-checking after every change;
// the timeout only guards against a hang.
func (bd *benchDaemon) waitIdle(b *testing.B, changes <-chan store.Change) {
	b.Helper()
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for {
		_, pending, err := bd.st.NextWake(b.Context())
		if err != nil {
			b.Fatalf("next wake: %v", err)
		}
		if !pending {
			return
		}
		select {
		case <-changes:
		case <-deadline.C:
			b.Fatal("timed out waiting for the runs to finish")
		}
	}
}

// BenchmarkIntakeHTTP posts one event per request from benchClients
// clients at once over keep-alive loopback connections. Every answer comes
// only after the event is fsynced. With "runs", each event also starts the
// no-op function, whose runs the workers execute meanwhile; runs/s counts
// until the last of them completed.
func BenchmarkIntakeHTTP(b *testing.B) {
	for _, bc := range []struct {
		name  string
		event string
	}{
		{"events", benchPlain},
		{"runs", benchTriggering},
	} {
		b.Run(bc.name, func(b *testing.B) {
			onEachStore(b, func(b *testing.B, storeURL string) {
				var ran atomic.Int64
				bd := startDaemon(b, storeURL, func() { ran.Add(1) })
				changes := bd.st.Subscribe(b.Context())
				body := benchEvent(b, bc.event)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				b.ResetTimer()
				for range benchClients {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) {
							if _, err := bd.post(body); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				intake := b.Elapsed()
				b.ReportMetric(float64(b.N)/intake.Seconds(), "events/s")
				if bc.event != benchTriggering {
					return
				}
				bd.waitIdle(b, changes)
				b.StopTimer()
				if n := ran.Load(); n != int64(b.N) {
					b.Fatalf("%d runs started, want %d", n, b.N)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
			})
		})
	}
}

// BenchmarkEventToRunStart sends one event at a time to an idle daemon and
// measures from just before the request to the moment the no-op handler
// starts; it waits for each run to complete before the next event.
func BenchmarkEventToRunStart(b *testing.B) { onEachStore(b, benchEventToRunStart) }

func benchEventToRunStart(b *testing.B, storeURL string) {
	started := make(chan time.Time, 1)
	bd := startDaemon(b, storeURL, func() { started <- time.Now() })
	changes := bd.st.Subscribe(b.Context())
	body := benchEvent(b, benchTriggering)
	// One request first, so the connection and the prepared statements
	// exist before timing.
	if _, err := bd.post(body); err != nil {
		b.Fatal(err)
	}
	<-started
	bd.waitIdle(b, changes)

	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		sent := time.Now()
		ids, err := bd.post(body)
		if err != nil {
			b.Fatal(err)
		}
		if len(ids) != 1 {
			b.Fatalf("answered ids %v, want one", ids)
		}
		samples = append(samples, (<-started).Sub(sent))
		bd.waitIdle(b, changes)
	}
	b.StopTimer()
	slices.Sort(samples)
	pct := func(p float64) float64 {
		return float64(samples[int(p*float64(len(samples)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkNoopRunsEndToEnd publishes b.N events that each start the no-op
// function, as arrays of up to benchBatch events over HTTP, and measures
// until every run has completed.
func BenchmarkNoopRunsEndToEnd(b *testing.B) { onEachStore(b, benchNoopRunsEndToEnd) }

func benchNoopRunsEndToEnd(b *testing.B, storeURL string) {
	const benchBatch = 500
	var ran atomic.Int64
	bd := startDaemon(b, storeURL, func() { ran.Add(1) })
	changes := bd.st.Subscribe(b.Context())
	event := benchEvent(b, benchTriggering)
	batch := func(n int) []byte {
		return append(append([]byte("["), bytes.Repeat(append(event, ','), n)[:n*(len(event)+1)-1]...), ']')
	}
	full := batch(benchBatch)
	var commands int64
	if bd.redis != nil {
		commands = bd.redisCommands(b)
	}

	b.ReportAllocs()
	b.ResetTimer()
	for left := b.N; left > 0; left -= benchBatch {
		body := full
		if left < benchBatch {
			body = batch(left)
		}
		if _, err := bd.post(body); err != nil {
			b.Fatal(err)
		}
	}
	bd.waitIdle(b, changes)
	b.StopTimer()
	if n := ran.Load(); n != int64(b.N) {
		b.Fatalf("%d runs started, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
	if bd.redis != nil {
		b.ReportMetric(float64(bd.redisCommands(b)-commands)/float64(b.N), "redis-cmds/run")
	}
}
