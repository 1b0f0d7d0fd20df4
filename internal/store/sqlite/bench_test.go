package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
)

func benchStore(b *testing.B) store.Store {
	return openTest(b, filepath.Join(b.TempDir(), "bench.db"), clockwork.NewRealClock())
}

// BenchmarkPublishParallel: many callers, so the writer commits them in
// groups; every call returns only once its event is fsynced.
func BenchmarkPublishParallel(b *testing.B) { storetest.BenchPublishParallel(b, benchStore(b)) }

// BenchmarkPublishSerial: one caller, so every event is a commit of its
// own: the cost of one fsynced commit.
func BenchmarkPublishSerial(b *testing.B) { storetest.BenchPublishSerial(b, benchStore(b)) }

// BenchmarkClaimFinish: no-op runs claimed and finished one at a time.
func BenchmarkClaimFinish(b *testing.B) { storetest.BenchClaimFinish(b, benchStore) }
