package storetest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// The same benchmarks run on every backend, so their figures compare.

// benchData is a 100-byte event payload.
var benchData = func() json.RawMessage {
	d := `{"slug":"hello-world","path":"/blog/hello-world","referrer":"https://example.com/","pad":"`
	d += strings.Repeat("x", 100-len(d)-2) + `"}`
	return json.RawMessage(d)
}()

func benchPublication() store.Publication {
	return store.Publication{
		Event: store.Event{Name: "blog/post.viewed", Data: benchData, TS: time.Now().UnixMilli()},
		Runs:  []store.RunSpec{{ID: ulid.Make().String(), FunctionID: "track-view"}},
	}
}

// BenchPublishParallel publishes one event with one run per call from many
// callers at once; each call returns once its event is durable.
func BenchPublishParallel(b *testing.B, s store.Store) {
	b.SetParallelism(128) // 128 callers per CPU
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Publish(b.Context(), []store.Publication{benchPublication()}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchPublishSerial publishes from one caller: the cost of one durable
// publication alone.
func BenchPublishSerial(b *testing.B, s store.Store) {
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.Publish(b.Context(), []store.Publication{benchPublication()}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchClaimFinish claims runs one at a time and finishes each as Completed
// at once (a no-op function), from one worker and from many; open gives a
// fresh empty store.
func BenchClaimFinish(b *testing.B, open func(b *testing.B) store.Store) {
	for _, workers := range []int{1, 64} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := open(b)
			for left := b.N; left > 0; left -= 1000 {
				pubs := make([]store.Publication, min(left, 1000))
				for i := range pubs {
					pubs[i] = benchPublication()
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
