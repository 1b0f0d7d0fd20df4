package redis_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
)

// shared is the server most tests use, started once by TestMain; each
// test isolates itself with its own key prefixes. startErr says why there
// is none.
var (
	shared   *redistest.Server
	startErr error
	nextID   atomic.Int64
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cyberdrew-redis-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, startErr = redistest.Start(dir, false)
	clusterDir = dir + "/cluster"
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	if sharedCl != nil {
		sharedCl.Stop()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// server returns the shared server, or skips (or fails) the test.
func server(t testing.TB) *redistest.Server {
	t.Helper()
	if shared == nil {
		redistest.Skip(t, startErr)
	}
	return shared
}

// open opens a store on url with prefixes no other test uses.
func open(t testing.TB, url string, clock clockwork.Clock) *redis.Store {
	t.Helper()
	return openWith(t, url, redis.Options{Clock: clock})
}

// openWith opens a store on url with opts and prefixes no other test uses.
func openWith(t testing.TB, url string, opts redis.Options) *redis.Store {
	t.Helper()
	n := nextID.Add(1)
	opts.Prefix, opts.SitePrefix = fmt.Sprintf("t%d:", n), fmt.Sprintf("t%d-site:", n)
	s, err := redis.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := server(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		return open(t, srv.URL(0), clock)
	})
}

// TestConformanceAsScripts runs the suite with the engine's code as
// scripts (EVALSHA), as on a server without functions (before Redis 7).
func TestConformanceAsScripts(t *testing.T) {
	srv := server(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		return openWith(t, srv.URL(5), redis.Options{Clock: clock, Scripts: true})
	})
}

// TestConformancePartitioned runs the suite on a keyspace spread over
// three partitions (Options.Partitions): each case's ids in one of them,
// in turn, and the Partitions cases across them.
func TestConformancePartitioned(t *testing.T) {
	srv := server(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		return openWith(t, srv.URL(6), redis.Options{Clock: clock, Partitions: 3})
	})
}

// TestConformanceEffectsAhead runs the suite on a partitioned store that
// commits a step's effects ahead of its record, as a partitioned store on
// a Cluster must (ahead.go), on one server.
func TestConformanceEffectsAhead(t *testing.T) {
	srv := server(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		s := openWith(t, srv.URL(11), redis.Options{Clock: clock, Partitions: 3})
		redis.CommitEffectsAhead(s)
		return s
	})
}

func TestKindAndURL(t *testing.T) {
	t.Parallel()
	srv := server(t)
	s := open(t, srv.URL(3), clockwork.NewRealClock())
	if s.Kind() != "redis" {
		t.Errorf("Kind() = %q, want redis", s.Kind())
	}
	if err := s.Set(t.Context(), "k", "v", 0); err != nil {
		t.Fatalf("Set: %v", err)
	}
	for _, bad := range []string{"http://x", "redis://host:notaport"} {
		if _, err := redis.Open(t.Context(), bad, redis.Options{}); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
	// A database the server does not have is a setting to fix, not an
	// outage to wait out.
	// So is a rediss:// URL for a server without TLS, whose handshake would
	// only time out: the error names the fix.
	tlsURL := "rediss://" + strings.TrimPrefix(srv.URL(3), "redis://")
	if _, err := redis.Open(t.Context(), tlsURL, redis.Options{}); !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), "use redis://") {
		t.Errorf("Open(%s) = %v, want store.ErrMisconfigured naming redis://", tlsURL, err)
	}
	hostPort := strings.TrimSuffix(strings.TrimPrefix(srv.URL(3), "redis://"), "/3")
	for url, want := range map[string]string{
		"redis://" + hostPort + "/0?cluster=true":     "is not a cluster node",
		"redis://" + hostPort + "," + hostPort + "/0": "is not a cluster node",
	} {
		_, err := redis.Open(t.Context(), url, redis.Options{})
		if !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%s) = %v, want store.ErrMisconfigured saying %q, without the password", url, err, want)
		}
	}
	if _, err := redis.Open(t.Context(), srv.URL(99), redis.Options{}); !errors.Is(err, store.ErrMisconfigured) {
		t.Errorf("Open(database 99) = %v, want store.ErrMisconfigured", err)
	}
}

// TestSiteKeysAreNative checks that the website reads what the jobs wrote
// with plain Redis commands, under the exact key names.
func TestSiteKeysAreNative(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	site := fmt.Sprintf("native-%d:", nextID.Add(1))
	s, err := redis.Open(ctx, srv.URL(1), redis.Options{SitePrefix: site})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.IncrBy(ctx, "views:post:hello", 3, time.Hour); err != nil {
		t.Fatalf("IncrBy: %v", err)
	}
	if _, err := s.SetAdd(ctx, "visitors:post:hello", 0, "a", "b"); err != nil {
		t.Fatalf("SetAdd: %v", err)
	}
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 1})
	defer c.Close()
	if v, err := c.Get(ctx, site+"views:post:hello").Result(); err != nil || v != "3" {
		t.Errorf("GET views = %q, %v; want 3", v, err)
	}
	if ttl, err := c.TTL(ctx, site+"views:post:hello").Result(); err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL views = %v, %v; want a native ttl of about an hour", ttl, err)
	}
	if n, err := c.SCard(ctx, site+"visitors:post:hello").Result(); err != nil || n != 2 {
		t.Errorf("SCARD visitors = %d, %v; want 2", n, err)
	}
	// A value the website writes itself reads back.
	if err := c.Set(ctx, site+"greeting", "hi", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "greeting"); err != nil || v != "hi" {
		t.Errorf("Get(greeting) = %q, %v; want hi", v, err)
	}
}

// TestOutage stops Redis under a store: calls fail fast with
// ErrUnavailable, and the store recovers by itself once Redis is back.
func TestOutage(t *testing.T) {
	t.Parallel()
	if shared == nil {
		redistest.Skip(t, startErr)
	}
	srv := redistest.StartT(t, true)
	ctx := t.Context()
	s := open(t, srv.URL(0), clockwork.NewRealClock())
	sub := s.Subscribe(ctx)
	if err := s.Set(ctx, "before", "1", 0); err != nil {
		t.Fatalf("Set: %v", err)
	}

	srv.Stop()
	start := time.Now()
	for name, call := range map[string]func() error{
		"Ping": func() error { return s.Ping(ctx) },
		"Get":  func() error { _, err := s.Get(ctx, "before"); return err },
		"Publish": func() error {
			_, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "app/x"}}})
			return err
		},
		"Claim": func() error { _, err := s.Claim(ctx, "w", 1, time.Minute); return err },
		"ListRuns": func() error {
			_, err := s.ListRuns(ctx, store.RunFilter{})
			return err
		},
	} {
		if err := call(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while Redis is down: err = %v, want ErrUnavailable", name, err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("calls while Redis is down took %v, want them to fail fast", d)
	}

	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the store did not recover within 10 s of Redis coming back")
		}
		time.Sleep(20 * time.Millisecond) // a guard between attempts, not a wait for a known event
	}
	if v, err := s.Get(ctx, "before"); err != nil || v != "1" {
		t.Errorf("Get after the restart = %q, %v; want the value written before (appendonly)", v, err)
	}
	// Notifications resume once the listener has subscribed again; changes
	// committed before that are lost, and the subscriber was told so with a
	// lag marker. Publish until one gets through.
	lagged := false
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "app/after"}}})
		if err != nil {
			t.Fatalf("Publish after the restart: %v", err)
		}
		guard := time.After(200 * time.Millisecond)
	read:
		for {
			select {
			case c := <-sub:
				if c.Kind == "" {
					lagged = true
				}
				if c.EventID == p[0].EventID {
					if !lagged {
						t.Errorf("no lag marker before the first change after the outage")
					}
					return
				}
			case <-guard:
				break read
			}
		}
	}
	t.Fatalf("no change reached the subscriber within 10 s of Redis coming back")
}

// TestAcrossStores checks that a change committed through one store
// reaches the subscribers of another on the same Redis and prefix.
func TestAcrossStores(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	prefix := fmt.Sprintf("across-%d:", nextID.Add(1))
	a, err := redis.Open(ctx, srv.URL(2), redis.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := redis.Open(ctx, srv.URL(2), redis.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub := b.Subscribe(ctx)
	p, err := a.Publish(ctx, []store.Publication{{Event: store.Event{Name: "app/cross"}}})
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case c := <-sub:
			if c.EventID == p[0].EventID {
				return
			}
		case <-timeout:
			t.Fatalf("the other store's subscriber did not hear of the event")
		}
	}
}

// TestPasswordSettings: a password the server refuses, or none where it
// needs one, is a setting to fix (exit 3 from serve), named, and the error
// never repeats the password.
func TestPasswordSettings(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	ctx := t.Context()
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "requirepass", "s3cret-pw").Err(); err != nil {
		t.Fatal(err)
	}
	for url, want := range map[string]string{
		"redis://" + srv.Addr + "/0":              "requires a password, and the URL gives none",
		"redis://:hunter2@" + srv.Addr + "/0":     "refused the URL's user or password",
		"redis://drew:hunter2@" + srv.Addr + "/0": "refused the URL's user or password",
	} {
		_, err := redis.Open(ctx, url, redis.Options{})
		if !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%s) = %v, want store.ErrMisconfigured saying %q, without the password", url, err, want)
		}
	}
	s, err := redis.Open(ctx, "redis://:s3cret-pw@"+srv.Addr+"/0", redis.Options{})
	if err != nil {
		t.Fatalf("Open with the password: %v", err)
	}
	s.Close()
}
