package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
	"github.com/dcyfr/cyberdrew/internal/testkit"
)

// The cluster the cluster tests share (three masters, three replicas),
// started by the first test that asks and stopped by TestMain; each test
// isolates itself with its own prefixes.
var (
	clusterOnce sync.Once
	sharedCl    *redistest.Cluster
	clusterErr  error
	clusterDir  string
)

func cluster(t testing.TB) *redistest.Cluster {
	t.Helper()
	clusterOnce.Do(func() {
		began := time.Now()
		sharedCl, clusterErr = redistest.StartCluster(clusterDir)
		t.Logf("the cluster took %v to form", time.Since(began).Round(time.Millisecond))
	})
	if sharedCl == nil {
		redistest.Skip(t, clusterErr)
	}
	return sharedCl
}

// TestConformanceCluster runs the whole conformance suite on a Redis
// Cluster through a redis:// URL listing its nodes, with the site keys in
// the engine's slot (a site prefix holding {engine}, which steps with
// key-value effects need) and every acknowledging write waiting for the
// engine master's replica (MinReplicas 1).
func TestConformanceCluster(t *testing.T) {
	cl := cluster(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		n := nextID.Add(1)
		s, err := redis.Open(context.Background(), cl.URL(), redis.Options{
			Clock: clock, Prefix: fmt.Sprintf("t%d:", n), SitePrefix: fmt.Sprintf("t%d-site:{engine}:", n),
			MinReplicas: 1, ReplicaTimeout: time.Second,
		})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestConformanceClusterPartitioned runs the suite on a cluster with the
// engine's records in three partitions, each its own slot, and the site
// keys under a hash tag of their own: no script reaches across slots, and a
// step's effects commit ahead of its record (ahead.go).
func TestConformanceClusterPartitioned(t *testing.T) {
	cl := cluster(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		n := nextID.Add(1)
		s, err := redis.Open(context.Background(), cl.URL(), redis.Options{
			Clock: clock, Prefix: fmt.Sprintf("t%d:", n), SitePrefix: fmt.Sprintf("t%d-site:{site%d}:", n, n),
			MinReplicas: 1, ReplicaTimeout: time.Second, Partitions: 3,
		})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		if !s.EffectsAhead() {
			t.Fatal("a partitioned store on a cluster commits effects with their record")
		}
		return s
	})
}

// TestClusterSiteKeysAcrossMasters keeps the site keys under a prefix
// without a hash tag, so they spread over the three masters: the key-value
// calls and the prefix scan reach every one, and a step whose effects name
// a key outside the engine's slot is refused with ErrInvalid, applying
// nothing.
func TestClusterSiteKeysAcrossMasters(t *testing.T) {
	t.Parallel()
	cl := cluster(t)
	ctx := t.Context()
	n := nextID.Add(1)
	site := fmt.Sprintf("spread%d:", n)
	s, err := redis.Open(ctx, cl.URL(), redis.Options{Prefix: fmt.Sprintf("t%d:", n), SitePrefix: site})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	const keys = 60
	var want []string
	masters := map[string]bool{}
	for i := range keys {
		k := fmt.Sprintf("views:post:p%02d", i)
		want = append(want, k)
		if _, err := s.IncrBy(ctx, k, int64(i+1), time.Hour); err != nil {
			t.Fatalf("IncrBy(%s): %v", k, err)
		}
		m, _, err := cl.MasterOf(ctx, site+k)
		if err != nil {
			t.Fatal(err)
		}
		masters[m] = true
	}
	if len(masters) != 3 {
		t.Fatalf("the %d keys landed on %d masters, want all 3: the test does not cover the scan", keys, len(masters))
	}
	var got []string
	for cursor := ""; ; {
		page, next, err := s.Scan(ctx, "views:post:", cursor, 25)
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
		got = append(got, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.Equal(got, want) {
		t.Errorf("Scan over %d masters = %d keys %v, want the %d written", len(masters), len(got), got, keys)
	}
	if ttl, err := s.TTL(ctx, want[7]); err != nil || ttl <= 59*time.Minute {
		t.Errorf("TTL(%s) = %v, %v; want about an hour", want[7], ttl, err)
	}
	if _, err := s.SetAdd(ctx, "visitors", time.Hour, "a", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, want[:30]...); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if page, _, err := s.Scan(ctx, "views:post:", "", 100); err != nil || !slices.Equal(page, want[30:]) {
		t.Errorf("Scan after deleting 30 = %v, %v", page, err)
	}

	// A step's effects outside the engine's slot.
	pub, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "app/fx"},
		Runs: []store.RunSpec{{ID: "01JZZZZZZZZZZZZZZZZZZZZZZ" + fmt.Sprint(n%10), FunctionID: "fx"}}}})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	ls, err := s.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(ls) != 1 || ls[0].RunID != pub[0].Runs[0].ID {
		t.Fatalf("Claim = %v, %v", ls, err)
	}
	tx := store.NewTx(s)
	if _, err := tx.IncrBy(ctx, "views:post:p59", 1, 0); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st := store.Step{RunID: ls[0].RunID, ID: "count", Name: "count", Kind: store.StepRun, Status: store.StatusCompleted,
		Attempts: []store.Attempt{{StartedAt: now, EndedAt: now}}, Output: json.RawMessage(`1`), StartedAt: now, EndedAt: now}
	err = s.CommitStep(ctx, &ls[0], st, nil, tx.Effects())
	if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "{engine}") {
		t.Fatalf("CommitStep with a key outside the engine's slot = %v, want ErrInvalid naming the fix", err)
	}
	if v, err := s.Get(ctx, "views:post:p59"); err != nil || v != "60" {
		t.Errorf("the refused commit changed the key: %q, %v", v, err)
	}
	if steps, err := s.Steps(ctx, ls[0].RunID); err != nil || len(steps) != 0 {
		t.Errorf("the refused commit recorded the step: %v, %v", steps, err)
	}
}

// TestClusterLoadsScriptsOnEveryNode: opening a store loads every script
// on all six nodes, replicas included, so a promoted replica runs EVALSHA
// at once.
func TestClusterLoadsScriptsOnEveryNode(t *testing.T) {
	t.Parallel()
	cl := cluster(t)
	ctx := t.Context()
	for _, n := range cl.Nodes {
		c := goredis.NewClient(&goredis.Options{Addr: n.Addr})
		err := c.ScriptFlush(ctx).Err()
		c.Close()
		if err != nil {
			t.Fatalf("SCRIPT FLUSH on %s: %v", n.Addr, err)
		}
	}
	s, err := redis.Open(ctx, cl.URL(), redis.Options{Prefix: fmt.Sprintf("t%d:", nextID.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hashes := redis.ScriptHashes()
	for _, n := range cl.Nodes {
		c := goredis.NewClient(&goredis.Options{Addr: n.Addr})
		exists, err := c.ScriptExists(ctx, hashes...).Result()
		c.Close()
		if err != nil {
			t.Fatalf("SCRIPT EXISTS on %s: %v", n.Addr, err)
		}
		if missing := len(hashes) - len(slices.DeleteFunc(exists, func(b bool) bool { return !b })); missing > 0 {
			t.Errorf("%s lacks %d of %d scripts", n.Addr, missing, len(hashes))
		}
	}
}

// TestClusterFailoverKeepsTheStore fails the engine's master over to its
// replica (CLUSTER FAILOVER) under a store opened with MinReplicas 1: the
// store follows the slot to the new master at the first MOVED, without an
// error for its caller; the new master's acknowledged writes wait for the
// demoted master, and change notifications keep arriving.
func TestClusterFailoverKeepsTheStore(t *testing.T) {
	cl := cluster(t)
	ctx := t.Context()
	prefix := fmt.Sprintf("t%d:", nextID.Add(1))
	s, err := redis.Open(ctx, cl.URL(), redis.Options{Prefix: prefix, MinReplicas: 1, ReplicaTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sub := s.Subscribe(ctx)
	before, err := s.Publish(ctx, []store.Publication{{Event: store.Event{Name: "app/before"}}})
	if err != nil {
		t.Fatalf("Publish before the failover: %v", err)
	}
	old, _, err := cl.MasterOf(ctx, prefix+"{engine}:")
	if err != nil {
		t.Fatal(err)
	}
	promoted, err := cl.Failover(ctx, prefix+"{engine}:")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the engine's slot moved from %s to %s", old, promoted)

	// The store's client still names the old master, which answers MOVED
	// without running the script: the store follows the reply to the new
	// master and the first call after the failover succeeds.
	after, err := s.Publish(ctx, []store.Publication{{Event: store.Event{ID: "01JZZZZZZZZZZZZZZZZZZZZZZA", Name: "app/after"}}})
	if err != nil {
		t.Fatalf("Publish after the failover: %v", err)
	}
	for _, id := range []string{before[0].EventID, after[0].EventID} {
		if _, err := s.GetEvent(ctx, id); err != nil {
			t.Errorf("event %s after the failover: %v", id, err)
		}
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case c := <-sub:
			if c.EventID == after[0].EventID {
				return
			}
		case <-timeout:
			t.Fatal("no notification of the event published after the failover")
		}
	}
}

// TestOneClusterNodeWithoutTheOption: a redis:// URL naming one node of a
// cluster, without ?cluster=true, is a setting to fix (the store would be
// answered MOVED forever), and the error says which.
func TestOneClusterNodeWithoutTheOption(t *testing.T) {
	t.Parallel()
	cl := cluster(t)
	ctx := t.Context()
	owner, _, err := cl.MasterOf(ctx, "cyberdrew:{engine}:layout")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cl.Nodes {
		if n.Addr == owner {
			continue
		}
		_, err := redis.Open(ctx, "redis://"+n.Addr+"/0", redis.Options{})
		if !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), "add ?cluster=true") {
			t.Errorf("Open(one node %s) = %v, want store.ErrMisconfigured asking for ?cluster=true", n.Addr, err)
		}
		return
	}
}

// TestClusterSaysANewKeyspaceIsInOneSlot: a keyspace keeps the
// partitions it is created with, so a new one created in one slot on a
// cluster logs a warning naming --redis-partitions; one created with
// partitions, or opened again, does not.
func TestClusterSaysANewKeyspaceIsInOneSlot(t *testing.T) {
	t.Parallel()
	cl := cluster(t)
	open := func(prefix string, partitions int) string {
		var log testkit.SyncBuffer
		s, err := redis.Open(t.Context(), cl.URL(), redis.Options{Prefix: prefix, SitePrefix: prefix + "{site}:",
			Partitions: partitions, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return log.String()
	}
	n := nextID.Add(1)
	one := fmt.Sprintf("t%d:", n)
	if got := open(one, 1); !strings.Contains(got, "--redis-partitions") {
		t.Errorf("a new keyspace in one slot logged %q, want a warning naming --redis-partitions", got)
	}
	if got := open(one, 1); strings.Contains(got, "--redis-partitions") {
		t.Errorf("the keyspace opened again logged %q", got)
	}
	if got := open(fmt.Sprintf("t%d-p:", n), 12); strings.Contains(got, "--redis-partitions") {
		t.Errorf("a new keyspace of 12 partitions logged %q", got)
	}
}
