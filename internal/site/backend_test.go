package site_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// The Redis backend runs on one redis-server for the whole package, started
// by TestMain; every test isolates itself with its own engine and site key
// prefixes. redisErr says why there is no server.
var (
	redisServer *redistest.Server
	redisErr    error
	redisTests  atomic.Int64 // numbers the prefixes, unique within the process (-count > 1)
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cyberdrew-site-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	redisServer, redisErr = redistest.Start(dir, false)
	if redisErr != nil && os.Getenv(redistest.EnvRequired) != "required" {
		fmt.Fprintf(os.Stderr, "SKIPPING REDIS TESTS: %v (set %s=required to make this fatal)\n", redisErr, redistest.EnvRequired)
	}
	code := m.Run()
	if redisServer != nil {
		redisServer.Stop()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// nativeRedis reads the site's keys behind the store's back, as the
// website does: a plain go-redis client and the site prefix.
type nativeRedis struct {
	rdb    *goredis.Client
	prefix string
}

// key is the Redis name of the site key k.
func (n *nativeRedis) key(k string) string { return n.prefix + k }

// backend opens a fresh, empty store for one test; native is nil but on
// Redis.
type backend struct {
	name string
	open func(t *testing.T, ctx context.Context, clock clockwork.Clock) (st store.Store, native *nativeRedis)
}

var backends = []backend{
	{name: "sqlite", open: func(t *testing.T, ctx context.Context, clock clockwork.Clock) (store.Store, *nativeRedis) {
		t.Helper()
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cyberdrew.db"), sqlite.Options{Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, nil
	}},
	{name: "redis", open: func(t *testing.T, ctx context.Context, clock clockwork.Clock) (store.Store, *nativeRedis) {
		t.Helper()
		if redisServer == nil {
			redistest.Skip(t, redisErr)
		}
		n := redisTests.Add(1)
		site := fmt.Sprintf("site-t%d-site:", n)
		st, err := redis.Open(ctx, redisServer.URL(0), redis.Options{Clock: clock, Prefix: fmt.Sprintf("site-t%d:", n), SitePrefix: site})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		rdb := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr, DB: 0})
		t.Cleanup(func() { rdb.Close() })
		return st, &nativeRedis{rdb: rdb, prefix: site}
	}},
}

// onEachBackend runs test as a parallel subtest per backend.
func onEachBackend(t *testing.T, test func(t *testing.T, be backend)) {
	t.Helper()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			test(t, be)
		})
	}
}
