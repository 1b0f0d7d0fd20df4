package redis_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
)

// keyspaceText reads every key under prefix as text, its name without the
// prefix: a string as it is, a hash, set or sorted set as its sorted
// entries.
func keyspaceText(t *testing.T, rdb *goredis.Client, prefix string) map[string]string {
	t.Helper()
	ctx := t.Context()
	names, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		var entries []string
		switch typ := rdb.Type(ctx, name).Val(); typ {
		case "string":
			entries = []string{rdb.Get(ctx, name).Val()}
		case "hash":
			for f, v := range rdb.HGetAll(ctx, name).Val() {
				entries = append(entries, f+"="+v)
			}
		case "set":
			entries = rdb.SMembers(ctx, name).Val()
		case "zset":
			for _, z := range rdb.ZRangeWithScores(ctx, name, 0, -1).Val() {
				entries = append(entries, fmt.Sprintf("%v@%v", z.Member, z.Score))
			}
		default:
			t.Fatalf("key %s: unexpected type %s", name, typ)
		}
		slices.Sort(entries)
		out[strings.TrimPrefix(name, prefix)] = strings.Join(entries, "\x00")
	}
	return out
}

// TestPublishTxWritesWhatTheScriptWrites: a group of publications without
// flow control stored as a transaction leaves the same keys, with the same
// values, as the publish script leaves for it, answers the same and
// publishes the same notification: events with and without runs, sent
// with and without an id and a ts, a run due later, a run leased at its
// publication with a finish timeout, a concurrency limit, and names that
// the notification must escape.
func TestPublishTxWritesWhatTheScriptWrites(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC))
	viaTx, viaScript := open(t, srv.URL(6), clock), open(t, srv.URL(6), clock)
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 6})
	t.Cleanup(func() { rdb.Close() })
	txPrefix, scriptPrefix := redis.EnginePrefix(viaTx), redis.EnginePrefix(viaScript)
	sub := rdb.Subscribe(ctx, txPrefix+"changes", scriptPrefix+"changes")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	// Registries and indexes that hold something before, as on a live keyspace.
	seedRun := ulid.Make().String()
	for _, s := range []*redis.Store{viaTx, viaScript} {
		if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{ID: "seed", Name: "test/tx.plain"},
			Runs: []store.RunSpec{{ID: seedRun, FunctionID: "plain"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := sub.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	now := clock.Now()
	run := func() string { return ulid.Make().String() }
	shared := []string{run(), run(), run()}
	pubs := []store.Publication{
		{Event: store.Event{Name: "test/tx.plain", Data: json.RawMessage(`{"a":1}`)},
			Runs: []store.RunSpec{{ID: run(), FunctionID: "plain"}}},
		{Event: store.Event{Name: "test/tx.none", Data: json.RawMessage(`{"b":[1,2]}`)}},
		{Event: store.Event{Name: "test/tx.later", TS: now.Add(time.Hour).UnixMilli()},
			Runs: []store.RunSpec{{ID: run(), FunctionID: "later", AvailableAt: now.Add(time.Hour),
				FinishTimeout: 30 * time.Second, ConcurrencyLimit: 2}}},
		{Event: store.Event{ID: "client-chosen-1", Name: "test/tx.two", TS: now.Add(-time.Minute).UnixMilli(),
			User: json.RawMessage(`{"id":"u1"}`), Version: "2026-12-07"},
			Runs: []store.RunSpec{{ID: run(), FunctionID: "tab\tfn"}, {ID: run(), FunctionID: `back\slash`}}},
		// Runs sharing their event's id, kept in it while queued
		// (keptInEvent), but for the function id a line cannot hold.
		{Event: store.Event{ID: shared[0], Name: "test/tx.kept"},
			Runs: []store.RunSpec{{ID: shared[0], FunctionID: "kept", FinishTimeout: 5 * time.Second}, {ID: run(), FunctionID: "second"}}},
		{Event: store.Event{ID: shared[1], Name: "test/tx.kept", TS: now.Add(time.Hour).UnixMilli()},
			Runs: []store.RunSpec{{ID: shared[1], FunctionID: "kept", AvailableAt: now.Add(time.Hour)}}},
		{Event: store.Event{ID: shared[2], Name: "test/tx.kept"},
			Runs: []store.RunSpec{{ID: shared[2], FunctionID: "tab\tkept"}}},
		{Event: store.Event{Name: "test/new\nline"},
			Runs: []store.RunSpec{{ID: run(), FunctionID: "leased", FinishTimeout: 10 * time.Second,
				LeaseTo: store.LeaseRequest{Owner: "w1", TTL: time.Minute}}}},
	}
	txReply, scriptReply, err := redis.PublishBothWays(ctx, viaTx, viaScript, pubs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(txReply, scriptReply) {
		t.Errorf("replies differ:\ntransaction %v\nscript      %v", txReply, scriptReply)
	}
	leases := 0
	for _, p := range txReply {
		for _, r := range p.Runs {
			if r.Lease != nil && r.Lease.Token != "" && r.Lease.Owner == "w1" && r.Lease.Run.FinishTimeout == 10*time.Second {
				leases++
			}
		}
	}
	if leases != 1 {
		t.Errorf("the transaction's reply reads %d leases, want the leased run's: %+v", leases, txReply)
	}
	notes := map[string]string{}
	for range 2 {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		notes[m.Channel] = m.Payload
	}
	if tx, sc := notes[txPrefix+"changes"], notes[scriptPrefix+"changes"]; tx != sc {
		t.Errorf("notifications differ:\ntransaction %q\nscript      %q", tx, sc)
	}
	got, want := keyspaceText(t, rdb, txPrefix), keyspaceText(t, rdb, scriptPrefix)
	for name, v := range want {
		if got[name] != v {
			t.Errorf("key %s:\ntransaction %q\nscript      %q", name, got[name], v)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("key %s written by the transaction only", name)
		}
	}
	if len(want) < 15 {
		t.Fatalf("the script left only %d keys: %v", len(want), want)
	}
	for i, id := range shared {
		_, hash := want["run:"+id]
		if kept := i < 2; hash == kept {
			t.Errorf("run %d sharing its event's id: hash written %v, want %v", i, hash, !kept)
		}
	}
}

// TestPublishTxYieldsToTheScript: what the transaction cannot decide goes
// through the publish script, whole: an event id stored before (found by
// the check, or stored between the check and EXEC) is a duplicate that
// creates no run, and an event a run waits for completes the wait.
func TestPublishTxYieldsToTheScript(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	group := func(ids ...string) []store.Publication {
		pubs := make([]store.Publication, len(ids))
		for i, id := range ids {
			pubs[i] = store.Publication{Event: store.Event{ID: id, Name: "test/tx.dup"},
				Runs: []store.RunSpec{{ID: ulid.Make().String(), FunctionID: "dup"}}}
		}
		return pubs
	}
	checkDuplicate := func(t *testing.T, s *redis.Store, got []store.Published, pubs []store.Publication, dup ...bool) {
		t.Helper()
		for i, p := range got {
			if p.Duplicate != dup[i] {
				t.Errorf("event %s: duplicate %v, want %v", p.EventID, p.Duplicate, dup[i])
			}
			_, err := s.GetRun(ctx, pubs[i].Runs[0].ID)
			if created := err == nil; created == dup[i] {
				t.Errorf("event %s: run created %v (%v), want %v", p.EventID, created, err, !dup[i])
			}
		}
	}

	t.Run("stored-before", func(t *testing.T) {
		s := open(t, srv.URL(6), clockwork.NewRealClock())
		if _, err := s.Publish(ctx, group("dup-a", "dup-b")); err != nil {
			t.Fatal(err)
		}
		pubs := group("dup-b", "dup-c")
		got, err := s.Publish(ctx, pubs)
		if err != nil {
			t.Fatal(err)
		}
		checkDuplicate(t, s, got, pubs, true, false)
	})

	t.Run("stored-during", func(t *testing.T) {
		s := open(t, srv.URL(6), clockwork.NewRealClock())
		rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 6})
		defer rdb.Close()
		hooked := 0
		redis.SetPublishTxHook(s, func() {
			hooked++
			// Another daemon stores the first event meanwhile.
			if _, err := rdb.Set(ctx, redis.EnginePrefix(s)+"event:race-a", `{"name":"test/tx.dup","data":{}}`, 0).Result(); err != nil {
				t.Error(err)
			}
		})
		pubs := group("race-a", "race-b")
		got, err := s.Publish(ctx, pubs)
		if err != nil {
			t.Fatal(err)
		}
		if hooked != 1 {
			t.Fatalf("the transaction's check ran %d times, want 1", hooked)
		}
		checkDuplicate(t, s, got, pubs, true, false)
	})

	t.Run("waited-for", func(t *testing.T) {
		s, runID, ls, clock, _, _ := rawLeasedRun(t)
		const name = "test/tx.approved"
		waitOn(t, s, &ls[0], clock.Now(), name)
		pubs := []store.Publication{
			{Event: store.Event{Name: name, Data: json.RawMessage(`{"n":1}`)}},
			{Event: store.Event{Name: name, Data: json.RawMessage(`{"n":2}`)}},
		}
		if _, err := s.Publish(ctx, pubs); err != nil {
			t.Fatal(err)
		}
		leases, err := s.Claim(ctx, "w", 1, time.Minute)
		if err != nil || len(leases) != 1 || leases[0].RunID != runID {
			t.Fatalf("Claim after the events: %v, %v", err, leases)
		}
		for _, st := range leases[0].Steps {
			if st.ID == "approval" && strings.Contains(string(st.Output), `"n":1`) {
				return
			}
		}
		t.Fatalf("the waiting run does not hold the first event: %+v", leases[0].Steps)
	})
}
