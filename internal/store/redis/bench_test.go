package redis_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// benchData is a 100-byte event payload, as in the sqlite benchmarks.
var benchData = func() json.RawMessage {
	d := `{"slug":"hello-world","path":"/blog/hello-world","referrer":"https://example.com/","pad":"`
	d += strings.Repeat("x", 100-len(d)-2) + `"}`
	return json.RawMessage(d)
}()

func benchPublication() []store.Publication {
	return []store.Publication{{
		Event: store.Event{Name: "blog/post.viewed", Data: benchData, TS: time.Now().UnixMilli()},
		Runs:  []store.RunSpec{{ID: ulid.Make().String(), FunctionID: "track-view"}},
	}}
}

// BenchmarkPublishParallel publishes one event with one run per call from
// many callers at once (the shared test server runs without persistence:
// this measures the store, not the disk).
func BenchmarkPublishParallel(b *testing.B) {
	s := open(b, server(b).URL(4), clockwork.NewRealClock())
	b.SetParallelism(128) // 128 callers per CPU
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Publish(b.Context(), benchPublication()); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkClaimFinish claims runs one at a time and finishes each as
// Completed at once (a no-op function), from one worker and from many.
func BenchmarkClaimFinish(b *testing.B) {
	for _, workers := range []int{1, 64} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := open(b, server(b).URL(4), clockwork.NewRealClock())
			for left := b.N; left > 0; left -= 1000 {
				pubs := make([]store.Publication, min(left, 1000))
				for i := range pubs {
					pubs[i] = benchPublication()[0]
				}
				if _, err := s.Publish(b.Context(), pubs); err != nil {
					b.Fatal(err)
				}
			}
			var done atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			errs := make(chan error, workers)
			for w := range workers {
				go func() {
					owner := fmt.Sprintf("w%d", w)
					for {
						ls, err := s.Claim(b.Context(), owner, 1, time.Minute)
						if err != nil || len(ls) == 0 {
							errs <- err
							return
						}
						if err := s.Finish(b.Context(), &ls[0], store.Outcome{Status: store.StatusCompleted}); err != nil {
							errs <- err
							return
						}
						done.Add(1)
					}
				}()
			}
			for range workers {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if n := done.Load(); n != int64(b.N) {
				b.Fatalf("finished %d runs, want %d", n, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
		})
	}
}
