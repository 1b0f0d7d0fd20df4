package redis_test

import (
	"encoding/json"
	"fmt"
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

// measured opens a store on the shared server's database 4 on the real
// clock with opts (as scripts, publications through the script, when
// asked) and a client for the server's counters,
// which it resets: the start of a benchmark that reads them.
func measured(b *testing.B, opts redis.Options) (*redis.Store, *goredis.Client) {
	b.Helper()
	srv := server(b)
	opts.Clock = clockwork.NewRealClock()
	s := openWith(b, srv.URL(4), opts)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	b.Cleanup(func() { rdb.Close() })
	if err := rdb.ConfigResetStat(b.Context()).Err(); err != nil {
		b.Fatal(err)
	}
	return s, rdb
}

// BenchmarkPublishBatch: groups of 1, 8 and 100 publications, each an
// event starting one run, one call at a time, as a busy intake groups
// them; stored as a transaction (publishtx.go) and by the publish script
// (PublishScriptOnly). It reports the server's CPU per event
// (redis-cpu-µs/event, INFO cpu), network included, the cost a busy Redis
// shared by several daemons pays. Alternate runs (-count) on a shared
// machine: the figure moves with its load.
func BenchmarkPublishBatch(b *testing.B) {
	data := json.RawMessage(`{"job":1,"pad":"` + strings.Repeat("x", 72) + `"}`)
	for _, batch := range []int{1, 8, 100} {
		for _, path := range []struct {
			name   string
			script bool
		}{{"transaction", false}, {"script", true}} {
			b.Run(fmt.Sprintf("%d/%s", batch, path.name), func(b *testing.B) {
				srv := server(b)
				s := openWith(b, srv.URL(4), redis.Options{Clock: clockwork.NewRealClock(), PublishScriptOnly: path.script})
				ctx := b.Context()
				cpu := serverCPU(b)
				b.ResetTimer()
				for range b.N {
					pubs := make([]store.Publication, batch)
					for i := range pubs {
						// As the engine publishes: the event's run has its id.
						id := ulid.Make().String()
						pubs[i] = store.Publication{Event: store.Event{ID: id, Name: "bench/job.requested", Data: data},
							Runs: []store.RunSpec{{ID: id, FunctionID: "noop"}}}
					}
					if _, err := s.Publish(ctx, pubs); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric((serverCPU(b)-cpu)*1e6/float64(b.N*batch), "redis-cpu-µs/event")
			})
		}
	}
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
			// Publications through the publish script too: a transaction
			// (publishtx.go) runs no engine code in either form.
			s, rdb := measured(b, redis.Options{Scripts: form.scripts, PublishScriptOnly: true})
			ctx := b.Context()
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

// BenchmarkPageViewRun: one page view's store calls as track-post-view
// makes them, one call at a time: the event published, its run claimed,
// the total counted (engine.StepIncr: the increment and its record, which
// answer with the total), and the day's keys and the milestone check
// committed with the finish. It reports per run the server's script time,
// its CPU (INFO cpu) and its commands (each FCALL and each command it
// runs, from INFO commandstats), the last of which does not move with the
// machine's load.
func BenchmarkPageViewRun(b *testing.B) {
	s, rdb := measured(b, redis.Options{})
	cpu := serverCPU(b)
	b.ResetTimer()
	for i := range b.N {
		pageViewRun(b, s, i)
	}
	b.StopTimer()
	b.ReportMetric(scriptTime(b, rdb)/float64(b.N), "script-µs/run")
	b.ReportMetric(commandCalls(b, rdb)/float64(b.N), "commands/run")
	b.ReportMetric((serverCPU(b)-cpu)*1e6/float64(b.N), "redis-cpu-µs/run")
}

// BenchmarkPageViewRunCluster is BenchmarkPageViewRun's run, one at a
// time, on the test cluster: the engine in one slot, and spread over 12
// partitions, where the run's two commits with effects are three calls
// each (ahead.go). Alternate runs (-count): the figure moves with the
// machine's load.
func BenchmarkPageViewRunCluster(b *testing.B) {
	cl := cluster(b)
	for _, parts := range []int{1, 12} {
		b.Run(fmt.Sprintf("partitions-%d", parts), func(b *testing.B) {
			n := nextID.Add(1)
			s, err := redis.Open(b.Context(), cl.URL(), redis.Options{Prefix: fmt.Sprintf("t%d:", n),
				SitePrefix: fmt.Sprintf("t%d-site:{engine}:", n), Partitions: parts})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			b.ResetTimer()
			for i := range b.N {
				pageViewRun(b, s, i)
			}
		})
	}
}

// pageViewRun is one page view's run as track-post-view makes it: its
// event published with the run, claimed, the view counted, the day's
// keys written, and the run finished with its last two steps.
func pageViewRun(b *testing.B, s *redis.Store, i int) {
	ctx := b.Context()
	data := json.RawMessage(`{"slug":"a-post","title":"A post","referrer":"https://example.com/x","region":"EU","visitor":"v1"}`)
	step := func(id, output string) store.Step {
		now := time.Now()
		return store.Step{ID: id, Name: id, Kind: store.StepRun, Status: store.StatusCompleted,
			Output: json.RawMessage(output), StartedAt: now, EndedAt: now}
	}
	ev := store.Event{ID: ulid.Make().String(), Name: "blog/post.viewed", Data: data}
	run, _ := store.MintIn(store.PartitionOf(ev.ID, s.Partitions()), s.Partitions(), func() string { return ulid.Make().String() })
	if _, err := s.Publish(ctx, []store.Publication{{Event: ev,
		Runs: []store.RunSpec{{ID: run, FunctionID: "track-post-view"}}}}); err != nil {
		b.Fatal(err)
	}
	ls, err := s.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		b.Fatalf("Claim = %v, %v", ls, err)
	}
	views := store.NewTx(s)
	if err := views.IncrByBlind(ctx, "views:a-post", 1, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := s.CommitStepsCount(ctx, &ls[0], []store.StepCommit{
		{Step: step("increment-views", "0"), Effects: views.Effects()},
	}); err != nil {
		b.Fatal(err)
	}
	day := store.NewTx(s)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(day.Set(ctx, "title:a-post", "A post", 0))
	must(day.SetAddBlind(ctx, "day:posts", time.Hour, "a-post"))
	must(day.SetAddBlind(ctx, "day:visitors", time.Hour, "v"+strconv.Itoa(i%50)))
	must(day.SetAddBlind(ctx, "day:referrers", time.Hour, "example.com"))
	must(day.IncrByBlind(ctx, "day:referrer:example.com", 1, time.Hour))
	must(day.SetAddBlind(ctx, "day:regions", time.Hour, "EU"))
	must(day.IncrByBlind(ctx, "day:region:EU", 1, time.Hour))
	must(day.IncrByBlind(ctx, "day:views:a-post", 1, time.Hour))
	if err := s.Finish(ctx, &ls[0], store.Outcome{Status: store.StatusCompleted,
		Output: json.RawMessage(`{"slug":"a-post","total":13,"milestones":[]}`),
		Steps: []store.StepCommit{
			{Step: step("track-daily-views", "true"), Effects: day.Effects()},
			{Step: step("check-milestones", `{"total":13,"reached":[]}`)},
		}}); err != nil {
		b.Fatal(err)
	}
}

// commandCalls is how many commands the server ran since its counters
// were reset: each FCALL or EVALSHA and each command it ran, and each
// command sent alone, less the benchmark's own CONFIG and INFO.
func commandCalls(b *testing.B, rdb *goredis.Client) float64 {
	b.Helper()
	info, err := rdb.Info(b.Context(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	total := 0.0
	for _, line := range strings.Split(info, "\r\n") {
		name, stats, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") || strings.HasPrefix(name, "config") || name == "info" {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		n, err := strconv.ParseFloat(calls, 64)
		if err != nil {
			b.Fatalf("%s: %v", line, err)
		}
		total += n
	}
	return total
}
