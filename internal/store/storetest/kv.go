package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var kvCases = []testCase{
	{"GetSet", testKVGetSet},
	{"Expiry", testKVExpiry},
	{"SetNX", testKVSetNX},
	{"IncrBy", testKVIncrBy},
	{"IncrByConcurrent", testKVIncrByConcurrent},
	{"Sets", testKVSets},
	{"Delete", testKVDelete},
	{"Scan", testKVScan},
	{"TTL", testKVTTL},
	{"WrongType", testKVWrongType},
}

func (b *bundle) kvSet(t *testing.T, key, value string, ttl time.Duration) {
	t.Helper()
	if err := b.store.Set(b.ctx, key, value, ttl); err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
}

func (b *bundle) kvGet(t *testing.T, key string) string {
	t.Helper()
	v, err := b.store.Get(b.ctx, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v
}

func (b *bundle) incr(t *testing.T, key string, delta int64, ttl time.Duration) int64 {
	t.Helper()
	n, err := b.store.IncrBy(b.ctx, key, delta, ttl)
	if err != nil {
		t.Fatalf("IncrBy(%q, %d): %v", key, delta, err)
	}
	return n
}

func (b *bundle) setAdd(t *testing.T, key string, ttl time.Duration, members ...string) int {
	t.Helper()
	n, err := b.store.SetAdd(b.ctx, key, ttl, members...)
	if err != nil {
		t.Fatalf("SetAdd(%q): %v", key, err)
	}
	return n
}

func (b *bundle) setCard(t *testing.T, key string) int64 {
	t.Helper()
	n, err := b.store.SetCard(b.ctx, key)
	if err != nil {
		t.Fatalf("SetCard(%q): %v", key, err)
	}
	return n
}

func (b *bundle) setMembers(t *testing.T, key string) []string {
	t.Helper()
	m, err := b.store.SetMembers(b.ctx, key)
	if err != nil {
		t.Fatalf("SetMembers(%q): %v", key, err)
	}
	slices.Sort(m)
	return m
}

func (b *bundle) ttl(t *testing.T, key string) time.Duration {
	t.Helper()
	d, err := b.store.TTL(b.ctx, key)
	if err != nil {
		t.Fatalf("TTL(%q): %v", key, err)
	}
	return d
}

// scanAll pages through Scan and returns every key, checking page sizes.
func (b *bundle) scanAll(t *testing.T, prefix string, count int) []string {
	t.Helper()
	var all []string
	cursor := ""
	for range 1000 {
		keys, next, err := b.store.Scan(b.ctx, prefix, cursor, count)
		if err != nil {
			t.Fatalf("Scan(%q, %q, %d): %v", prefix, cursor, count, err)
		}
		if len(keys) > count {
			t.Errorf("Scan(%q, %q, %d) returned %d keys", prefix, cursor, count, len(keys))
		}
		all = append(all, keys...)
		if next == "" {
			return all
		}
		cursor = next
	}
	t.Fatalf("Scan(%q) did not end", prefix)
	return nil
}

func testKVGetSet(t *testing.T, b *bundle) {
	_, err := b.store.Get(b.ctx, "missing")
	wantErr(t, "Get(missing)", err, store.ErrNotFound)

	b.kvSet(t, "greeting", "hello", 0)
	checkEqual(t, "Get", b.kvGet(t, "greeting"), "hello")
	b.kvSet(t, "greeting", "bonjour", 0)
	checkEqual(t, "Get after overwrite", b.kvGet(t, "greeting"), "bonjour")
	b.kvSet(t, "empty", "", 0)
	checkEqual(t, "Get(empty value)", b.kvGet(t, "empty"), "")
	big := string(make([]byte, 64<<10))
	b.kvSet(t, "big", big, 0)
	checkEqual(t, "len(Get(big))", len(b.kvGet(t, "big")), len(big))
	b.kvSet(t, "unicode:é", `{"json": "välue ✓"}`, 0)
	checkEqual(t, "Get(unicode)", b.kvGet(t, "unicode:é"), `{"json": "välue ✓"}`)

	// Decision: Set replaces the ttl as Redis SET does; no ttl clears it.
	b.kvSet(t, "cache", "v1", time.Minute)
	b.kvSet(t, "cache", "v2", 0)
	checkEqual(t, "TTL after Set without ttl", b.ttl(t, "cache"), time.Duration(0))
	b.clock.Advance(2 * time.Minute)
	checkEqual(t, "Get after the old ttl", b.kvGet(t, "cache"), "v2")
}

func testKVExpiry(t *testing.T, b *bundle) {
	b.kvSet(t, "k", "v", 10*time.Second)
	b.clock.Advance(9 * time.Second)
	checkEqual(t, "Get before expiry", b.kvGet(t, "k"), "v")
	b.clock.Advance(2 * time.Second)
	_, err := b.store.Get(b.ctx, "k")
	wantErr(t, "Get after expiry", err, store.ErrNotFound)

	// Set after expiry starts afresh.
	b.kvSet(t, "k", "w", time.Minute)
	checkEqual(t, "Get after reset", b.kvGet(t, "k"), "w")
	checkEqual(t, "TTL after reset", b.ttl(t, "k"), time.Minute)
}

func testKVSetNX(t *testing.T, b *bundle) {
	setnx := func(value string, ttl time.Duration) bool {
		t.Helper()
		ok, err := b.store.SetNX(b.ctx, "lock", value, ttl)
		if err != nil {
			t.Fatalf("SetNX: %v", err)
		}
		return ok
	}
	checkEqual(t, "first SetNX", setnx("a", 10*time.Second), true)
	checkEqual(t, "second SetNX", setnx("b", 10*time.Second), false)
	checkEqual(t, "Get", b.kvGet(t, "lock"), "a")
	checkEqual(t, "TTL not reset by a failed SetNX", b.ttl(t, "lock"), 10*time.Second)
	b.clock.Advance(11 * time.Second)
	checkEqual(t, "SetNX after expiry", setnx("c", 0), true)
	checkEqual(t, "Get after expiry", b.kvGet(t, "lock"), "c")
	checkEqual(t, "TTL of SetNX without ttl", b.ttl(t, "lock"), time.Duration(0))
}

func testKVIncrBy(t *testing.T, b *bundle) {
	checkEqual(t, "IncrBy(absent, 5)", b.incr(t, "n", 5, 0), int64(5))
	checkEqual(t, "IncrBy(-2)", b.incr(t, "n", -2, 0), int64(3))
	checkEqual(t, "Get", b.kvGet(t, "n"), "3")
	b.kvSet(t, "n2", "40", 0)
	checkEqual(t, "IncrBy on a Set number", b.incr(t, "n2", 2, 0), int64(42))
	b.kvSet(t, "word", "abc", 0)
	_, err := b.store.IncrBy(b.ctx, "word", 1, 0)
	wantErr(t, "IncrBy on a non-integer value", err, store.ErrInvalid)
	checkEqual(t, "value after a refused IncrBy", b.kvGet(t, "word"), "abc")

	// The ttl is set when IncrBy creates the key, not on later calls.
	checkEqual(t, "IncrBy(new, ttl)", b.incr(t, "views", 1, 10*time.Second), int64(1))
	b.clock.Advance(5 * time.Second)
	checkEqual(t, "IncrBy(existing, ttl)", b.incr(t, "views", 1, 10*time.Second), int64(2))
	checkEqual(t, "TTL after the second IncrBy", b.ttl(t, "views"), 5*time.Second)
	checkEqual(t, "IncrBy(existing, no ttl)", b.incr(t, "views", 1, 0), int64(3))
	checkEqual(t, "TTL after IncrBy without ttl", b.ttl(t, "views"), 5*time.Second)
	b.clock.Advance(6 * time.Second)
	checkEqual(t, "IncrBy after expiry", b.incr(t, "views", 1, 10*time.Second), int64(1))
	checkEqual(t, "TTL after recreation", b.ttl(t, "views"), 10*time.Second)
}

func testKVIncrByConcurrent(t *testing.T, b *bundle) {
	const workers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := b.store.IncrBy(b.ctx, "hits", 1, time.Hour); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent IncrBy: %v", err)
	}
	checkEqual(t, "sum of concurrent IncrBy", b.kvGet(t, "hits"), fmt.Sprint(workers*each))
	checkEqual(t, "TTL", b.ttl(t, "hits"), time.Hour)
}

func testKVSets(t *testing.T, b *bundle) {
	checkEqual(t, "SetAdd(a, b)", b.setAdd(t, "s", 0, "a", "b"), 2)
	checkEqual(t, "SetAdd(b, c, c)", b.setAdd(t, "s", 0, "b", "c", "c"), 1)
	checkEqual(t, "SetCard", b.setCard(t, "s"), int64(3))
	checkIDs(t, "SetMembers", b.setMembers(t, "s"), []string{"a", "b", "c"})

	// Decision: a missing set reads as empty, as in Redis.
	checkEqual(t, "SetCard(missing)", b.setCard(t, "none"), int64(0))
	checkEqual(t, "len(SetMembers(missing))", len(b.setMembers(t, "none")), 0)

	// The ttl is set when SetAdd creates the set.
	checkEqual(t, "SetAdd(new, ttl)", b.setAdd(t, "visitors", 10*time.Second, "x"), 1)
	b.clock.Advance(5 * time.Second)
	checkEqual(t, "SetAdd(existing, ttl)", b.setAdd(t, "visitors", 10*time.Second, "y"), 1)
	checkEqual(t, "TTL of the set", b.ttl(t, "visitors"), 5*time.Second)
	b.clock.Advance(6 * time.Second)
	checkEqual(t, "SetCard(expired)", b.setCard(t, "visitors"), int64(0))
	checkEqual(t, "len(SetMembers(expired))", len(b.setMembers(t, "visitors")), 0)
	checkEqual(t, "SetAdd after expiry", b.setAdd(t, "visitors", 0, "x"), 1)
	checkEqual(t, "SetCard after recreation", b.setCard(t, "visitors"), int64(1))
	checkEqual(t, "TTL after recreation without ttl", b.ttl(t, "visitors"), time.Duration(0))
}

func testKVDelete(t *testing.T, b *bundle) {
	b.kvSet(t, "a", "1", 0)
	b.kvSet(t, "b", "2", 0)
	b.incr(t, "c", 1, 0)
	b.setAdd(t, "s", 0, "x")
	if err := b.store.Delete(b.ctx, "a", "s", "missing"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := b.store.Get(b.ctx, "a")
	wantErr(t, "Get(deleted)", err, store.ErrNotFound)
	checkEqual(t, "SetCard(deleted set)", b.setCard(t, "s"), int64(0))
	_, err = b.store.TTL(b.ctx, "s")
	wantErr(t, "TTL(deleted set)", err, store.ErrNotFound)
	checkEqual(t, "Get(kept)", b.kvGet(t, "b"), "2")
	checkEqual(t, "Get(kept counter)", b.kvGet(t, "c"), "1")
	if err := b.store.Delete(b.ctx); err != nil {
		t.Errorf("Delete() of no keys: %v", err)
	}
	if err := b.store.Delete(b.ctx, "c"); err != nil {
		t.Fatalf("Delete(counter): %v", err)
	}
	checkEqual(t, "IncrBy(deleted counter)", b.incr(t, "c", 1, 0), int64(1))
	checkEqual(t, "SetAdd(deleted set)", b.setAdd(t, "s", 0, "x"), 1)
}

func testKVScan(t *testing.T, b *bundle) {
	for _, k := range []string{"p:5", "p:1", "p:3", "p:2", "p:4", "px", "q:1", "o:9", "p_1", "p%1"} {
		b.kvSet(t, k, "v", 0)
	}
	b.setAdd(t, "p:6", 0, "m")
	b.incr(t, "p:7", 1, 0)
	b.kvSet(t, "p:3a", "gone soon", time.Second)
	b.clock.Advance(2 * time.Second)

	want := []string{"p:1", "p:2", "p:3", "p:4", "p:5", "p:6", "p:7"}
	for _, count := range []int{1, 2, 3, 7, 100} {
		checkIDs(t, fmt.Sprintf("Scan(p:, count %d)", count), b.scanAll(t, "p:", count), want)
	}
	// Prefixes are literal: no pattern characters.
	checkIDs(t, "Scan(p_)", b.scanAll(t, "p_", 10), []string{"p_1"})
	checkIDs(t, "Scan(p%)", b.scanAll(t, "p%", 10), []string{"p%1"})
	checkIDs(t, "Scan(none:)", b.scanAll(t, "none:", 10), nil)
	checkIDs(t, "Scan(all)", b.scanAll(t, "", 4), []string{"o:9", "p%1", "p:1", "p:2", "p:3", "p:4", "p:5", "p:6", "p:7", "p_1", "px", "q:1"})
}

func testKVTTL(t *testing.T, b *bundle) {
	_, err := b.store.TTL(b.ctx, "missing")
	wantErr(t, "TTL(missing)", err, store.ErrNotFound)
	b.kvSet(t, "forever", "v", 0)
	checkEqual(t, "TTL(no expiry)", b.ttl(t, "forever"), time.Duration(0))
	b.kvSet(t, "brief", "v", 10*time.Second)
	b.clock.Advance(3 * time.Second)
	checkEqual(t, "TTL(remaining)", b.ttl(t, "brief"), 7*time.Second)
	b.clock.Advance(7*time.Second + time.Millisecond)
	_, err = b.store.TTL(b.ctx, "brief")
	wantErr(t, "TTL(expired)", err, store.ErrNotFound)
	b.setAdd(t, "set", 0, "m")
	checkEqual(t, "TTL(set without expiry)", b.ttl(t, "set"), time.Duration(0))
}

// testKVWrongType: as in Redis, a string is not a set and a set is not a
// string. Decision: the backend reports it as ErrInvalid.
func testKVWrongType(t *testing.T, b *bundle) {
	b.kvSet(t, "str", "v", 0)
	b.setAdd(t, "set", 0, "m")
	_, err := b.store.SetAdd(b.ctx, "str", 0, "m")
	wantErr(t, "SetAdd on a string", err, store.ErrInvalid)
	_, err = b.store.SetCard(b.ctx, "str")
	wantErr(t, "SetCard on a string", err, store.ErrInvalid)
	_, err = b.store.SetMembers(b.ctx, "str")
	wantErr(t, "SetMembers on a string", err, store.ErrInvalid)
	_, err = b.store.Get(b.ctx, "set")
	wantErr(t, "Get on a set", err, store.ErrInvalid)
	_, err = b.store.IncrBy(b.ctx, "set", 1, 0)
	wantErr(t, "IncrBy on a set", err, store.ErrInvalid)
	checkEqual(t, "string after refused calls", b.kvGet(t, "str"), "v")
	checkIDs(t, "set after refused calls", b.setMembers(t, "set"), []string{"m"})

	// Set and Delete work on any key, as Redis SET and DEL do.
	b.kvSet(t, "set", "now a string", 0)
	checkEqual(t, "Set over a set", b.kvGet(t, "set"), "now a string")
	if err := b.store.Delete(b.ctx, "str"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkEqual(t, "SetAdd after Delete", b.setAdd(t, "str", 0, "m"), 1)
}
