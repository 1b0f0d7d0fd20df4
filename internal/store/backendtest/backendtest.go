// Package backendtest runs a package's tests on every store backend: a
// fresh SQLite file per test, and a Redis store per test with its own key
// prefixes on one redis-server that the package's TestMain starts. Without
// redis-server the Redis cases skip loudly, or fail when
// CYBERDREW_TEST_REDIS=required (CI).
package backendtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

var (
	redisServer *redistest.Server
	redisErr    error
	redisTests  atomic.Int64 // numbers the prefixes, unique within the process (-count > 1)
	pkgName     string
)

// Main is a package's TestMain: it starts the shared redis-server (when
// there is one), runs the tests and stops it. name labels the key prefixes.
func Main(m *testing.M, name string) {
	pkgName = name
	dir, err := os.MkdirTemp("", "cyberdrew-"+name+"-test-")
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

// Native reads the site's keys behind the store's back, as the website
// does: a plain go-redis client and the site prefix.
type Native struct {
	Client *goredis.Client
	Prefix string
}

// Key is the Redis name of the site key k.
func (n *Native) Key(k string) string { return n.Prefix + k }

// Backend opens a fresh, empty store for one test; native is nil but on
// Redis.
type Backend struct {
	Name string
	Open func(t *testing.T, ctx context.Context, clock clockwork.Clock) (st store.Store, native *Native)
}

// Backends are every store backend.
var Backends = []Backend{
	{Name: "sqlite", Open: func(t *testing.T, ctx context.Context, clock clockwork.Clock) (store.Store, *Native) {
		t.Helper()
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cyberdrew.db"), sqlite.Options{Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, nil
	}},
	{Name: "redis", Open: func(t *testing.T, ctx context.Context, clock clockwork.Clock) (store.Store, *Native) {
		return openRedis(t, ctx, clock, 1)
	}},
	// The engine's records spread over three partitions (redis.Options.
	// Partitions): every id the engine mints placed in its partition.
	{Name: "redis-partitioned", Open: func(t *testing.T, ctx context.Context, clock clockwork.Clock) (store.Store, *Native) {
		return openRedis(t, ctx, clock, 3)
	}},
}

// openRedis opens a Redis store of partitions partitions on the shared
// redis-server, with key prefixes of its own.
func openRedis(t *testing.T, ctx context.Context, clock clockwork.Clock, partitions int) (store.Store, *Native) {
	t.Helper()
	if redisServer == nil {
		redistest.Skip(t, redisErr)
	}
	n := redisTests.Add(1)
	site := fmt.Sprintf("%s-t%d-site:", pkgName, n)
	st, err := redis.Open(ctx, redisServer.URL(0), redis.Options{Clock: clock, Prefix: fmt.Sprintf("%s-t%d:", pkgName, n),
		SitePrefix: site, Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rdb := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr, DB: 0})
	t.Cleanup(func() { rdb.Close() })
	return st, &Native{Client: rdb, Prefix: site}
}

// OnEach runs test as a parallel subtest per backend.
func OnEach(t *testing.T, test func(t *testing.T, be Backend)) {
	t.Helper()
	for _, be := range Backends {
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			test(t, be)
		})
	}
}

// WaitFor re-checks cond after every change on changes until it holds; the
// timeout only guards against a hang, and onTimeout (when set) may log
// what the test sees before it fails.
func WaitFor(t *testing.T, changes <-chan store.Change, timeout time.Duration, what string, cond func() bool, onTimeout func()) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-changes:
		case <-deadline.C:
			if onTimeout != nil {
				onTimeout()
			}
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
