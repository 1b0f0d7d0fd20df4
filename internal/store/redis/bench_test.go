package redis_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
)

// The benchmarks use the shared test server, which runs without
// persistence: they measure the store, not the disk.
func benchStore(b *testing.B) store.Store { return open(b, server(b).URL(4), clockwork.NewRealClock()) }

// BenchmarkPublishParallel: one event with one run per call, many callers.
// redis-cpu-µs/op is the server's own CPU time per event (INFO cpu), the
// figure that bounds intake on a busy Redis, less noisy than the rate.
func BenchmarkPublishParallel(b *testing.B) {
	s := benchStore(b)
	cpu := serverCPU(b)
	storetest.BenchPublishParallel(b, s)
	b.ReportMetric((serverCPU(b)-cpu)*1e6/float64(b.N), "redis-cpu-µs/op")
}

// BenchmarkClaimFinish: no-op runs claimed and finished one at a time.
func BenchmarkClaimFinish(b *testing.B) { storetest.BenchClaimFinish(b, benchStore) }

// serverCPU is the shared server's CPU time so far, in seconds (INFO
// cpu: used_cpu_user and used_cpu_sys).
func serverCPU(b *testing.B) float64 {
	b.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: server(b).Addr})
	defer rdb.Close()
	info, err := rdb.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	total := 0.0
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu: %s: %v", line, err)
			}
			total += f
		}
	}
	return total
}

// BenchmarkUnbatchedRun: one caller publishes an event, claims its run,
// records three steps and finishes it, one call at a time, so no script
// carries another caller's work: the server's script time per run
// (script-µs/run, from INFO commandstats) with the engine's code as
// functions (Redis 7) and as scripts. Run the two alternately
// (-count) on a shared machine: the figure moves with its load.
func BenchmarkUnbatchedRun(b *testing.B) {
	for _, form := range []struct {
		name    string
		scripts bool
	}{{"functions", false}, {"scripts", true}} {
		b.Run(form.name, func(b *testing.B) {
			srv := server(b)
			s := openWith(b, srv.URL(4), redis.Options{Clock: clockwork.NewRealClock(), Scripts: form.scripts})
			rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
			defer rdb.Close()
			ctx := b.Context()
			if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			data := json.RawMessage(`{"slug":"a-post","visitor":"v1"}`)
			b.ResetTimer()
			for range b.N {
				id := ulid.Make().String()
				if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "app/viewed", Data: data},
					Runs: []store.RunSpec{{ID: id, FunctionID: "fn"}}}}); err != nil {
					b.Fatal(err)
				}
				ls, err := s.Claim(ctx, "w", 1, time.Minute)
				if err != nil || len(ls) != 1 {
					b.Fatalf("Claim = %v, %v", ls, err)
				}
				now := time.Now()
				for _, step := range []string{"a", "b", "c"} {
					st := store.Step{ID: step, Name: step, Kind: "run", Status: store.StatusCompleted,
						Output: json.RawMessage(`1`), StartedAt: now, EndedAt: now}
					if err := s.SaveStep(ctx, &ls[0], st, nil); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Finish(ctx, &ls[0], store.Outcome{Status: store.StatusCompleted}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(scriptTime(b, rdb)/float64(b.N), "script-µs/run")
		})
	}
}

// scriptTime is the server's time in engine calls (FCALL, EVALSHA, EVAL)
// since its counters were reset, in µs.
func scriptTime(b *testing.B, rdb *goredis.Client) float64 {
	b.Helper()
	return commandStat(b, rdb, "fcall", "usec") + commandStat(b, rdb, "evalsha", "usec") + commandStat(b, rdb, "eval", "usec")
}
