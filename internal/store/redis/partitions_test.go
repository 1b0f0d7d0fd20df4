package redis_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
)

// TestPartitionsSpreadTheRecords: on a keyspace of three partitions, the
// events and runs of 90 publications (each run with its event) land in
// all three, each partition holding its own queue, indexes and records
// and nothing of the others'; a worker claims them all.
func TestPartitionsSpreadTheRecords(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	prefix := fmt.Sprintf("t%d:", nextID.Add(1))
	s, err := redis.Open(ctx, srv.URL(6), redis.Options{Prefix: prefix, SitePrefix: prefix + "site:", Partitions: 3,
		Clock: clockwork.NewRealClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Partitions() != 3 {
		t.Fatalf("Partitions() = %d", s.Partitions())
	}
	want := map[int][]string{} // partition -> run ids
	var pubs []store.Publication
	for range 90 {
		ev := ulid.Make().String()
		p := store.PartitionOf(ev, 3)
		run, _ := store.MintIn(p, 3, func() string { return ulid.Make().String() })
		want[p] = append(want[p], run)
		pubs = append(pubs, store.Publication{Event: store.Event{ID: ev, Name: "part/spread", Data: []byte(`{}`)},
			Runs: []store.RunSpec{{ID: run, FunctionID: "fn-spread"}}})
	}
	if _, err := s.Publish(ctx, pubs); err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 6})
	t.Cleanup(func() { rdb.Close() })
	for p := range 3 {
		tag := fmt.Sprintf("%s{engine:%d/3}:", prefix, p)
		keys, err := rdb.Keys(ctx, tag+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		runs := 0
		for _, k := range keys {
			id, ok := strings.CutPrefix(k, tag+"run:")
			if !ok {
				continue
			}
			runs++
			if store.PartitionOf(id, 3) != p {
				t.Errorf("run %s of partition %d is stored in partition %d", id, store.PartitionOf(id, 3), p)
			}
		}
		if len(want[p]) == 0 || runs != len(want[p]) {
			t.Errorf("partition %d holds %d runs, want %d (of 90)", p, runs, len(want[p]))
		}
		if n := rdb.ZCard(ctx, tag+"queue").Val(); n != int64(len(want[p])) {
			t.Errorf("partition %d's queue holds %d, want %d", p, n, len(want[p]))
		}
		if n := rdb.ZCard(ctx, tag+"events:name:part/spread").Val(); n != int64(len(want[p])) {
			t.Errorf("partition %d's event index holds %d, want %d", p, n, len(want[p]))
		}
	}
	if n := rdb.Exists(ctx, prefix+"{engine}:queue").Val(); n != 0 {
		t.Errorf("the unpartitioned queue exists")
	}
	claimed := 0
	for range 10 {
		ls, err := s.Claim(ctx, "w", 40, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		claimed += len(ls)
	}
	if claimed != 90 {
		t.Errorf("claimed %d of 90", claimed)
	}
}

// TestPartitionsOfAKeyspaceAreKept: a keyspace keeps the partitions it was
// first opened with; a store opened with another number is refused as
// misconfigured, naming both, whichever came first. A cluster refuses
// partitions for now.
func TestPartitionsOfAKeyspaceAreKept(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	for _, c := range []struct{ first, then int }{{3, 2}, {3, 1}, {1, 3}} {
		prefix := fmt.Sprintf("t%d:", nextID.Add(1))
		opts := redis.Options{Prefix: prefix, SitePrefix: prefix + "site:", Partitions: c.first}
		s, err := redis.Open(ctx, srv.URL(6), opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		again, err := redis.Open(ctx, srv.URL(6), opts)
		if err != nil {
			t.Fatalf("%d partitions opened again: %v", c.first, err)
		}
		again.Close()
		opts.Partitions = c.then
		other, err := redis.Open(ctx, srv.URL(6), opts)
		if err == nil {
			other.Close()
			t.Errorf("a keyspace of %d partitions opened with %d", c.first, c.then)
			continue
		}
		if !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), fmt.Sprintf("open it with %d", max(c.first, 1))) {
			t.Errorf("a keyspace of %d partitions opened with %d: %v, want it misconfigured, naming %d", c.first, c.then, err, c.first)
		}
	}
	for _, n := range []int{-1, store.MaxPartitions + 1} {
		if s, err := redis.Open(ctx, srv.URL(6), redis.Options{Partitions: n}); !errors.Is(err, store.ErrMisconfigured) {
			if err == nil {
				s.Close()
			}
			t.Errorf("Open with %d partitions: %v, want misconfigured", n, err)
		}
	}
}
