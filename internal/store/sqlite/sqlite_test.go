package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		return openTest(t, filepath.Join(t.TempDir(), "cyberdrew.db"), clock)
	})
}

// openTest opens a store at path and closes it when t ends.
func openTest(t testing.TB, path string, clock clockwork.Clock) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, Options{Clock: clock})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func event(name string) store.Event {
	return store.Event{Name: name, Data: json.RawMessage(`{"n":1}`), TS: t0.UnixMilli()}
}

func TestMigrationsAppliedOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "dir", "cyberdrew.db")
	clock := clockwork.NewFakeClockAt(t0)
	s, err := Open(t.Context(), path, Options{Clock: clock})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	clock.Advance(time.Hour)
	s = openTest(t, path, clock) // re-open: nothing left to apply

	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.rdb.QueryContext(t.Context(), "SELECT version, applied_at FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []int
	for rows.Next() {
		var v int
		var at int64
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		if at != t0.UnixMilli() {
			t.Errorf("migration %d applied_at = %d, want %d (the first Open)", v, at, t0.UnixMilli())
		}
		got = append(got, v)
	}
	if len(got) != len(all) {
		t.Fatalf("schema_migrations has versions %v, want %d migrations", got, len(all))
	}
	for i, m := range all {
		if got[i] != m.version {
			t.Errorf("version %d = %d, want %d", i, got[i], m.version)
		}
	}

	var mode string
	if err := s.rdb.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cyberdrew.db")
	s := openTest(t, path, clockwork.NewFakeClockAt(t0))
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if err := s.write(t.Context(), "test", true, func(tx *txn) error {
		_, err := tx.exec("INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(t.Context(), path, Options{})
	if err == nil || !strings.Contains(err.Error(), "9999") {
		t.Errorf("Open of a database from a newer binary: err = %v, want a refusal naming version 9999", err)
	}
	// A setting no wait fixes (serve exits 3, which the systemd unit does
	// not restart), not a failure to retry.
	if !errors.Is(err, store.ErrMisconfigured) {
		t.Errorf("Open of a database from a newer binary: err = %v, want ErrMisconfigured", err)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cyberdrew.db")
	clock := clockwork.NewFakeClockAt(t0)
	s, err := Open(t.Context(), path, Options{Clock: clock})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	pub, err := s.Publish(t.Context(), []store.Publication{{
		Event: event("app/signup"),
		Runs:  []store.RunSpec{{ID: "01J0000000000000000000RUN1", FunctionID: "welcome"}},
	}})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := s.Set(t.Context(), "views:home", "42", time.Hour); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.GetRun(t.Context(), "01J0000000000000000000RUN1"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetRun after Close: err = %v, want ErrUnavailable", err)
	}
	if _, err := s.Publish(t.Context(), []store.Publication{{Event: event("x")}}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Publish after Close: err = %v, want ErrUnavailable", err)
	}

	s = openTest(t, path, clock)
	ev, err := s.GetEvent(t.Context(), pub[0].EventID)
	if err != nil {
		t.Fatalf("GetEvent after reopen: %v", err)
	}
	if ev.Name != "app/signup" || string(ev.Data) != `{"n":1}` {
		t.Errorf("event after reopen = %+v", ev)
	}
	run, err := s.GetRun(t.Context(), "01J0000000000000000000RUN1")
	if err != nil {
		t.Fatalf("GetRun after reopen: %v", err)
	}
	if run.Status != store.StatusQueued || run.EventID != ev.ID {
		t.Errorf("run after reopen = %+v", run)
	}
	if v, err := s.Get(t.Context(), "views:home"); err != nil || v != "42" {
		t.Errorf("Get after reopen = %q, %v; want 42", v, err)
	}
	ls, err := s.Claim(t.Context(), "w", 1, time.Minute)
	if err != nil || len(ls) != 1 {
		t.Fatalf("Claim after reopen = %v, %v", ls, err)
	}
}

func TestGroupCommitAnswersEveryCaller(t *testing.T) {
	t.Parallel()
	s := openTest(t, filepath.Join(t.TempDir(), "cyberdrew.db"), clockwork.NewFakeClockAt(t0))
	const callers = 300
	var wg sync.WaitGroup
	ids := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			spec := store.RunSpec{ID: fmt.Sprintf("run-%03d", i), FunctionID: "fn"}
			p, err := s.Publish(t.Context(), []store.Publication{{Event: event("load/test"), Runs: []store.RunSpec{spec}}})
			if err == nil {
				ids[i] = p[0].EventID
			}
			errs[i] = err
		})
	}
	wg.Wait()
	seen := make(map[string]bool)
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if seen[ids[i]] {
			t.Fatalf("event id %s answered twice", ids[i])
		}
		seen[ids[i]] = true
		if _, err := s.GetEvent(t.Context(), ids[i]); err != nil {
			t.Errorf("GetEvent(%s) of caller %d: %v", ids[i], i, err)
		}
	}
	page, err := s.ListRuns(t.Context(), store.RunFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != callers {
		t.Errorf("%d runs stored, want %d", len(page.Items), callers)
	}
}

// blockWriter submits an operation that holds the writer until the
// returned func is called, so what is submitted meanwhile lands in one
// group.
func blockWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.write(t.Context(), "block", false, func(*txn) error {
			close(entered)
			<-gate
			return nil
		})
	}()
	<-entered
	return func() {
		close(gate)
		if err := <-done; err != nil {
			t.Errorf("blocking op: %v", err)
		}
	}
}

// waitQueued waits until n operations are queued for the writer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.w.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations queued, want %d", len(s.w.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFailingOpRollsBackOnlyItself(t *testing.T) {
	t.Parallel()
	s := openTest(t, filepath.Join(t.TempDir(), "cyberdrew.db"), clockwork.NewFakeClockAt(t0))
	release := blockWriter(t, s)

	boom := errors.New("boom")
	keys := []string{"a", "b", "c"}
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() {
			errs[i] = s.write(t.Context(), "test", true, func(tx *txn) error {
				if _, err := tx.exec(`INSERT INTO kv (key, kind, value) VALUES (?, 'string', 'v')`, k); err != nil {
					return err
				}
				if k == "b" {
					return boom // after its insert: the savepoint must undo it
				}
				return nil
			})
		})
		waitQueued(t, s, i+1)
	}
	release()
	wg.Wait()

	for i, k := range keys {
		_, err := s.Get(t.Context(), k)
		if k == "b" {
			if !errors.Is(errs[i], boom) {
				t.Errorf("op b: err = %v, want boom", errs[i])
			}
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Get(b) err = %v, want ErrNotFound: the failed op must be rolled back", err)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("op %s: %v", k, errs[i])
		}
		if err != nil {
			t.Errorf("Get(%s): %v", k, err)
		}
	}
}

// TestSynchronousFollowsDurability checks the pragma each kind of op
// commits with: FULL for a durable op, NORMAL for lease bookkeeping, also
// when both arrive in one group.
func TestSynchronousFollowsDurability(t *testing.T) {
	t.Parallel()
	s := openTest(t, filepath.Join(t.TempDir(), "cyberdrew.db"), clockwork.NewFakeClockAt(t0))
	mode := func(durable bool) int {
		var m int
		if err := s.write(t.Context(), "mode", durable, func(tx *txn) error {
			return tx.queryRow("PRAGMA synchronous").Scan(&m)
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	const normal, full = 1, 2
	if m := mode(false); m != normal {
		t.Errorf("non-durable group: synchronous = %d, want NORMAL (1)", m)
	}
	if m := mode(true); m != full {
		t.Errorf("durable group: synchronous = %d, want FULL (2)", m)
	}

	// In a group mixing both, the bookkeeping commits on its own, unsynced,
	// and the durable op still commits at FULL.
	release := blockWriter(t, s)
	var got [2]int
	var wg sync.WaitGroup
	for i, durable := range []bool{false, true} {
		wg.Go(func() { got[i] = mode(durable) })
		waitQueued(t, s, i+1)
	}
	release()
	wg.Wait()
	if got != [2]int{normal, full} {
		t.Errorf("mixed group: synchronous = %v, want [NORMAL FULL]", got)
	}
}

// TestPublishAcknowledgedAfterCommit reads each published event back through
// an independent connection the moment Publish returns.
func TestPublishAcknowledgedAfterCommit(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cyberdrew.db")
	s := openTest(t, path, clockwork.NewFakeClockAt(t0))
	other, err := sql.Open("sqlite", dsn(s.path, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for range 20 {
		// Lease bookkeeping in between must not weaken the next event.
		if _, err := s.Claim(t.Context(), "w", 1, time.Minute); err != nil {
			t.Fatal(err)
		}
		p, err := s.Publish(t.Context(), []store.Publication{{Event: event("ack/test")}})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := other.QueryRow("SELECT COUNT(*) FROM events WHERE id = ?", p[0].EventID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("event %s not visible to another connection after Publish returned", p[0].EventID)
		}
	}
}

func TestCancelledContextSkipsOp(t *testing.T) {
	t.Parallel()
	s := openTest(t, filepath.Join(t.TempDir(), "cyberdrew.db"), clockwork.NewFakeClockAt(t0))
	release := blockWriter(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Set(ctx, "k", "v", 0) }()
	waitQueued(t, s, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Set with cancelled ctx: err = %v, want context.Canceled", err)
	}
	release()
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(k) err = %v, want ErrNotFound: a cancelled op must not run", err)
	}
}

func TestCloseDrainsQueuedWrites(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cyberdrew.db")
	clock := clockwork.NewFakeClockAt(t0)
	s, err := Open(t.Context(), path, Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	release := blockWriter(t, s)
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- s.Set(t.Context(), fmt.Sprintf("k%02d", i), "v", 0) }()
	}
	waitQueued(t, s, n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("queued Set: %v", err)
		}
	}
	s = openTest(t, path, clock)
	keys, _, err := s.Scan(t.Context(), "k", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != n {
		t.Errorf("%d keys after Close and reopen, want %d", len(keys), n)
	}
}

// TestClaimScansPastManyBlockedRuns queues more runs held back by their
// concurrency key than Claim reads in one page ahead of a free one.
func TestClaimScansPastManyBlockedRuns(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(t0)
	s := openTest(t, filepath.Join(t.TempDir(), "cyberdrew.db"), clock)
	publish := func(id, key string) {
		t.Helper()
		spec := store.RunSpec{ID: id, FunctionID: "fn", ConcurrencyKey: key, ConcurrencyLimit: 1}
		if _, err := s.Publish(t.Context(), []store.Publication{{Event: event("x"), Runs: []store.RunSpec{spec}}}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Millisecond) // a distinct AvailableAt for each, in order
	}
	blocked := 3*claimPage + 5
	for i := range blocked {
		publish(fmt.Sprintf("run-%04d", i), "busy")
	}
	publish("run-free", "")

	ls, err := s.Claim(t.Context(), "w", 1, time.Minute)
	if err != nil || len(ls) != 1 || ls[0].RunID != "run-0000" {
		t.Fatalf("first Claim = %v, %v; want run-0000", ls, err)
	}
	ls, err = s.Claim(t.Context(), "w", 5, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].RunID != "run-free" {
		t.Errorf("Claim behind %d blocked runs = %v, want [run-free]", blocked-1, ls)
	}
}
