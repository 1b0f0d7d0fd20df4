package redis_test

import (
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
)

// TestConformanceSentinel runs the whole conformance suite through a
// redis+sentinel:// URL: a master, a replica and three sentinels.
func TestConformanceSentinel(t *testing.T) {
	topo := redistest.StartSentinelT(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		return open(t, topo.URL(0), clock)
	})
}
