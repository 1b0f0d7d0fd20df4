package redis_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
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
