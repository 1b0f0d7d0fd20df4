// Package sqlite is the embedded store of cyberdrew: one SQLite file in WAL
// mode through modernc.org/sqlite (pure Go, no cgo).
//
// All writes go through one writer goroutine that commits in groups: it
// drains every queued operation, runs each in its own SAVEPOINT (so one
// operation's error undoes only that operation), commits and then answers
// each caller. Durable operations (an event, a step, an outcome, a
// key-value write) commit with synchronous=FULL, so the WAL is fsynced
// before any of their callers hears back. Lease bookkeeping (Claim,
// RenewLease, Release) and pruning need no fsync: a group's bookkeeping
// commits first, in a transaction of its own with synchronous=NORMAL, so a
// claim never waits for the fsync of the events it arrived with. Reads use
// a separate pool of read-only connections, which WAL lets run beside the
// writer.
//
// Times are stored as unix milliseconds and JSON as TEXT; the schema is in
// migrations/ and is applied by Open.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"
	modernc "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/dcyfr/cyberdrew/internal/store"
)

var _ store.Store = (*Store)(nil)

// Options configure a Store.
type Options struct {
	// Clock gives every "now" the store uses; nil means the real clock.
	Clock clockwork.Clock
	// Logger receives the store's few log lines; nil discards them.
	Logger *slog.Logger
}

// Store is the SQLite backend of store.Store.
type Store struct {
	path  string
	clock clockwork.Clock
	log   *slog.Logger

	wdb *sql.DB // one connection, used by the writer goroutine only
	rdb *sql.DB // read-only pool

	w     *writer
	subs  *store.Fanout[store.Change]
	reads readStmts

	closed atomic.Bool
	lock   *os.File // lockDatabase's; nil where there is none

	entropyMu sync.Mutex
	entropy   io.Reader
}

// Open opens (creating it when missing) the database at path, applies the
// missing migrations and starts the writer.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", pathProblem(err))
	}
	// Create the file owner-only (an empty file is an empty database);
	// SQLite gives its -wal and -shm files the same mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", pathProblem(err))
	}
	f.Close()
	lock, err := lockDatabase(abs, opts.Logger.With("component", "store", "store", "sqlite"))
	if err != nil {
		return nil, err
	}
	opened := false
	defer func() {
		if !opened && lock != nil {
			lock.Close()
		}
	}()
	// Commit with fdatasync(2), as SQLite's own Linux builds do: it flushes
	// the WAL's data and size, all a commit needs to survive a crash,
	// without the timestamp update fsync(2) waits for as well. Where it is
	// unavailable (macOS, Windows) SQLite keeps its usual sync.
	_, _ = modernc.Fdatasync(true)
	s := &Store{
		path:    abs,
		clock:   opts.Clock,
		log:     opts.Logger.With("component", "store", "store", "sqlite"),
		subs:    store.NewChangeFanout(),
		entropy: ulid.Monotonic(rand.Reader, 0),
		lock:    lock,
	}

	s.wdb, err = sql.Open("sqlite", dsn(abs, url.Values{
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"},
		"_txlock":       {"immediate"}, // migrations
		// Every operation runs in a savepoint, whose undo pages go to the
		// statement journal: keep it in memory, not in a temporary file.
		// A 16 MiB page cache keeps the hot index pages of a busy queue (the
		// burn-down runs as fast as with 64 MiB, and RSS stays small).
		// auto_vacuum takes effect only on a new database (before its
		// first table): Prune then returns freed pages to the file system.
		"_pragma": {"auto_vacuum(incremental)", "temp_store(memory)", "cache_size(-16384)"},
	}))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	// The writer keeps its one connection (and the statements prepared on
	// it) for the life of the store.
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)
	if err := s.migrate(ctx); err != nil {
		s.wdb.Close()
		return nil, err
	}

	s.rdb, err = sql.Open("sqlite", dsn(abs, url.Values{"_query_only": {"1"}}))
	if err != nil {
		s.wdb.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	readers := max(4, 2*runtime.GOMAXPROCS(0))
	s.rdb.SetMaxOpenConns(readers)
	s.rdb.SetMaxIdleConns(readers)
	if err := s.rdb.PingContext(ctx); err != nil {
		s.wdb.Close()
		s.rdb.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}

	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		s.wdb.Close()
		s.rdb.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	s.w = newWriter(s, conn)
	go s.w.run()
	opened = true
	return s, nil
}

// pathProblem marks as misconfigured a database path that no wait makes
// usable: a file where a directory must be, a directory where the file
// must be, a place this user may not write. serve then exits 3, which the
// systemd unit does not restart in a loop.
func pathProblem(err error) error {
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) || errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %w", store.ErrMisconfigured, err)
	}
	return err
}

// dsn builds the driver name of the database file at abs with the settings
// every connection shares plus extra.
func dsn(abs string, extra url.Values) string {
	q := url.Values{
		"_busy_timeout": {"10000"},
		"_foreign_keys": {"1"},
	}
	for k, v := range extra {
		q[k] = v
	}
	return (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
}

// Kind names the backend.
func (s *Store) Kind() string { return "sqlite" }

// Partitions is 1: the SQLite store is not spread (store.Store).
func (s *Store) Partitions() int { return 1 }

// Ping reports whether the database takes a write and answers a read: it
// rewrites the health row through the writer (durably, as intake writes)
// and runs a trivial query on the read pool, within ctx's deadline.
func (s *Store) Ping(ctx context.Context) error {
	// The health row's write fits in a page the file already has, so it
	// succeeds on a disk too full for any event: the space is checked too.
	if free, ok := freeBytes(s.path); ok && free < minFreeBytes {
		return fmt.Errorf("%w: sqlite: ping: the disk holding %s is nearly full (%d KiB free, under %d KiB): events are refused",
			store.ErrUnavailable, s.path, free>>10, minFreeBytes>>10)
	}
	err := s.write(ctx, "ping", true, func(t *txn) error {
		_, err := t.exec(`INSERT INTO health (id, checked_at) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at`, t.now.UnixMilli())
		return err
	})
	if err == nil {
		var one int
		err = wrap("ping", s.readRow(ctx, "SELECT 1").Scan(&one))
	}
	if err != nil && !errors.Is(err, store.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// minFreeBytes is the free space under which the store is not ready: four
// events of the largest size the event API takes by default (256 KiB),
// with their runs and the write-ahead log's pages.
const minFreeBytes = 1 << 20

// Close stops the writer once it has committed everything already
// submitted, ends every subscription and closes the database.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.w.stop()
	s.subs.Close()
	s.reads.close()
	err := errors.Join(s.wdb.Close(), s.rdb.Close())
	if s.lock != nil {
		s.lock.Close() // releases the lock, after the database is closed
	}
	return err
}

// readStmts holds the fixed queries of the read pool, each prepared once:
// database/sql then prepares it on each connection the first time it runs
// there and keeps it, so the hot reads (a run's trigger event, the next
// wake) are not parsed again on every call.
type readStmts struct {
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	closed bool
}

// readRow runs a read query that returns at most one row.
func (s *Store) readRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.reads.stmt(ctx, s.rdb, query)
	if err != nil {
		// A Row cannot carry an error of its own; running the query
		// unprepared reports the same error at Scan.
		return s.rdb.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

func (r *readStmts) stmt(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.stmts[query]; ok {
		return st, nil
	}
	if r.closed {
		return nil, errors.New("read statements closed")
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if r.stmts == nil {
		r.stmts = make(map[string]*sql.Stmt)
	}
	r.stmts[query] = st
	return st, nil
}

func (r *readStmts) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, st := range r.stmts {
		st.Close()
	}
}

// open reports ErrUnavailable once the store is closed.
func (s *Store) open(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("sqlite: %s: %w: store closed", op, store.ErrUnavailable)
	}
	return nil
}

// newULID returns a ULID for time t, monotonic within the process.
func (s *Store) newULID(t time.Time) string {
	s.entropyMu.Lock()
	defer s.entropyMu.Unlock()
	return ulid.MustNew(ulid.Timestamp(t), s.entropy).String()
}

// wrap prefixes err with the operation and maps sql.ErrNoRows to
// store.ErrNotFound.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// ms converts t to unix milliseconds, NULL for the zero time.
func ms(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

// fromMS converts nullable unix milliseconds back to a time (UTC).
func fromMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64).UTC()
}

// expiry is the expires_at of something living ttl from now; NULL when ttl
// is not positive (no expiry).
func expiry(now time.Time, ttl time.Duration) any {
	if ttl <= 0 {
		return nil
	}
	return now.Add(ttl).UnixMilli()
}

// nullStr stores "" as NULL.
func nullStr(v string) any {
	if v == "" {
		return nil
	}
	return v
}

// nullJSON stores an empty document as NULL.
func nullJSON(v []byte) any {
	if len(v) == 0 {
		return nil
	}
	return string(v)
}

// rawJSON reads a nullable JSON column.
func rawJSON(v sql.NullString) []byte {
	if !v.Valid {
		return nil
	}
	return []byte(v.String)
}
