package redis_test

import (
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
)

// The benchmarks use the shared test server, which runs without
// persistence: they measure the store, not the disk.
func benchStore(b *testing.B) store.Store { return open(b, server(b).URL(4), clockwork.NewRealClock()) }

// BenchmarkPublishParallel: one event with one run per call, many callers.
func BenchmarkPublishParallel(b *testing.B) { storetest.BenchPublishParallel(b, benchStore(b)) }

// BenchmarkClaimFinish: no-op runs claimed and finished one at a time.
func BenchmarkClaimFinish(b *testing.B) { storetest.BenchClaimFinish(b, benchStore) }
