package engine_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// The engine benchmarks measure cyberdrew's side of the scenarios issue #7
// compares with asynq, in process: the store, the engine and a worker pool,
// no HTTP. Each runs on SQLite (fsynced), on a Redis without persistence
// and on a Redis with appendonly yes and appendfsync always.

const (
	benchWorkers   = 50 // asynq's Concurrency in the comparison
	benchProducers = 16 // concurrent publishers
	benchEventName = "bench/noop.requested"
)

// benchData is a 100-byte event payload.
var benchData = func() json.RawMessage {
	d := `{"slug":"hello-world","path":"/blog/hello-world","referrer":"https://example.com/","pad":"`
	return json.RawMessage(d + strings.Repeat("x", 100-len(d)-2) + `"}`)
}()

// benchStore is an open store and, on Redis, a client that reads the
// server's command counters.
type benchStore struct {
	st    store.Store
	redis *goredis.Client
}

// onEachBenchStore runs bench on every backend configuration.
func onEachBenchStore(b *testing.B, bench func(b *testing.B, bs benchStore)) {
	b.Run("sqlite", func(b *testing.B) {
		st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		bench(b, benchStore{st: st})
	})
	for _, aof := range []bool{false, true} {
		b.Run("redis/aof="+strconv.FormatBool(aof), func(b *testing.B) {
			srv := redistest.StartT(b, aof)
			st, err := redis.Open(context.Background(), srv.URL(0), redis.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
			b.Cleanup(func() { rdb.Close() })
			bench(b, benchStore{st: st, redis: rdb})
		})
	}
}

// resetCommands zeroes the Redis server's command counters.
func (bs benchStore) resetCommands(b *testing.B) {
	b.Helper()
	if err := bs.redis.ConfigResetStat(b.Context()).Err(); err != nil {
		b.Fatal(err)
	}
}

// commands is how many commands the Redis server executed since the last
// reset, those that scripts call included.
func (bs benchStore) commands(b *testing.B) int64 {
	b.Helper()
	n, err := redistest.Commands(b.Context(), bs.redis)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// cpu is the CPU time this process and, on Redis, the Redis server have
// used so far: on a shared machine CPU per run varies less than wall time.
func (bs benchStore) cpu(b *testing.B) (proc, server time.Duration) {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	proc = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if bs.redis == nil {
		return proc, 0
	}
	info, err := bs.redis.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu line %q: %v", line, err)
			}
			server += time.Duration(f * float64(time.Second))
		}
	}
	return proc, server
}

// reportCPU reports the CPU time per op since (proc, server).
func (bs benchStore) reportCPU(b *testing.B, proc, server time.Duration) {
	b.Helper()
	p, s := bs.cpu(b)
	b.ReportMetric(float64((p-proc).Microseconds())/float64(b.N), "go-cpu-µs/op")
	if bs.redis != nil {
		b.ReportMetric(float64((s-server).Microseconds())/float64(b.N), "redis-cpu-µs/op")
	}
}

// benchEngine returns an engine whose only function, "noop", is triggered
// by benchEventName and calls onRun as it starts.
func benchEngine(b *testing.B, st store.Store, onRun func()) *engine.Engine {
	b.Helper()
	eng, err := engine.New(engine.Options{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	noop := engine.Function{
		ID:       "noop",
		Triggers: []engine.Trigger{{Event: benchEventName}},
		Handler: func(context.Context, *engine.Run) (any, error) {
			onRun()
			return nil, nil
		},
	}
	if err := eng.Register(noop); err != nil {
		b.Fatal(err)
	}
	return eng
}

// BenchmarkBurnDown queues b.N no-op runs, then starts a pool of 50
// workers and measures until every run has completed: asynq's burn-down of
// queued no-op tasks at Concurrency 50.
func BenchmarkBurnDown(b *testing.B) { onEachBenchStore(b, benchBurnDown) }

func benchBurnDown(b *testing.B, bs benchStore) {
	var ran atomic.Int64
	eng := benchEngine(b, bs.st, func() { ran.Add(1) })
	for left := b.N; left > 0; left -= 1000 {
		evs := make([]engine.IncomingEvent, min(left, 1000))
		for i := range evs {
			evs[i] = engine.IncomingEvent{Name: benchEventName, Data: benchData}
		}
		if _, err := eng.Publish(b.Context(), evs); err != nil {
			b.Fatal(err)
		}
	}
	changes := bs.st.Subscribe(b.Context())
	if bs.redis != nil {
		bs.resetCommands(b)
	}
	proc, server := bs.cpu(b)
	b.ReportAllocs()
	b.ResetTimer()
	pool := engine.NewWorkerPool(eng, engine.PoolOptions{Workers: benchWorkers})
	if err := pool.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	waitIdle(b, bs.st, changes)
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pool.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	if n := ran.Load(); n != int64(b.N) {
		b.Fatalf("%d runs started, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
	bs.reportCPU(b, proc, server)
	if bs.redis != nil {
		b.ReportMetric(float64(bs.commands(b))/float64(b.N), "redis-cmds/run")
	}
}

// waitIdle returns once no run is pending, re-checking after every change;
// the timeout only guards against a hang.
func waitIdle(b *testing.B, st store.Store, changes <-chan store.Change) {
	b.Helper()
	deadline := time.NewTimer(5 * time.Minute)
	defer deadline.Stop()
	for {
		_, pending, err := st.NextWake(b.Context())
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

// BenchmarkPublish16 publishes one event (100 bytes of data, triggering one
// run) per call from 16 producers at once, each call returning once the
// event and its run are stored durably: asynq's Client.Enqueue from 16
// goroutines.
func BenchmarkPublish16(b *testing.B) { onEachBenchStore(b, benchPublish16) }

func benchPublish16(b *testing.B, bs benchStore) {
	eng := benchEngine(b, bs.st, func() {})
	var next atomic.Int64
	var wg sync.WaitGroup
	if bs.redis != nil {
		bs.resetCommands(b)
	}
	proc, server := bs.cpu(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range benchProducers {
		wg.Go(func() {
			ev := []engine.IncomingEvent{{Name: benchEventName, Data: benchData}}
			for next.Add(1) <= int64(b.N) {
				if _, err := eng.Publish(b.Context(), ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	bs.reportCPU(b, proc, server)
	if bs.redis != nil {
		b.ReportMetric(float64(bs.commands(b))/float64(b.N), "redis-cmds/event")
	}
}
