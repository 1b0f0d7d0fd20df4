package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// maxBatch caps how many operations one commit carries.
const maxBatch = 512

// op is one write submitted to the writer: fn runs inside its own SAVEPOINT
// of the group's transaction.
type op struct {
	ctx     context.Context
	fn      func(*txn) error
	durable bool
	done    chan error // buffered: the writer never waits for the caller
	changes []store.Change
}

// txn is what an operation sees: the group's open transaction on the write
// connection, the time the operation runs at, and the changes it will
// announce once committed.
type txn struct {
	w       *writer
	now     time.Time
	changes []store.Change
}

// writer owns the write connection and commits submitted operations in
// groups.
//
// It drives the transaction itself (BEGIN IMMEDIATE ... COMMIT on its
// dedicated *sql.Conn) rather than through *sql.Tx, so the statements it
// prepares once on that connection serve every later group without being
// prepared again.
type writer struct {
	s     *Store
	conn  *sql.Conn
	ops   chan *op
	mu    sync.RWMutex // held for reading while submitting, for writing by stop
	done  chan struct{}
	stmts map[string]*sql.Stmt // prepared on conn, by query
	full  bool                 // conn is at synchronous=FULL
}

func newWriter(s *Store, conn *sql.Conn) *writer {
	return &writer{
		s:     s,
		conn:  conn,
		ops:   make(chan *op, maxBatch),
		done:  make(chan struct{}),
		stmts: make(map[string]*sql.Stmt),
		full:  true, // the DSN opens the connection with synchronous=FULL
	}
}

// write submits fn and waits until the group holding it has committed (or
// failed). A durable operation is on disk when write returns nil. When ctx
// ends after submission the caller stops waiting, but the operation may
// still commit.
func (s *Store) write(ctx context.Context, name string, durable bool, fn func(*txn) error) error {
	if err := s.open(name); err != nil {
		return err
	}
	o := &op{ctx: ctx, fn: fn, durable: durable, done: make(chan error, 1)}
	w := s.w
	w.mu.RLock()
	if s.closed.Load() {
		w.mu.RUnlock()
		return s.open(name)
	}
	select {
	case w.ops <- o:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return wrap(name, ctx.Err())
	}
	select {
	case err := <-o.done:
		return wrap(name, err)
	case <-ctx.Done():
		return wrap(name, ctx.Err())
	}
}

// stop lets the writer commit what was submitted, then ends it. Store.Close
// calls it once, after marking the store closed, so no new operation
// arrives once the in-flight submitters have released mu.
func (w *writer) stop() {
	w.mu.Lock()
	close(w.ops)
	w.mu.Unlock()
	<-w.done
	for _, st := range w.stmts {
		st.Close()
	}
	w.conn.Close()
}

func (w *writer) run() {
	defer close(w.done)
	group := make([]*op, 0, maxBatch)
	quick := make([]*op, 0, maxBatch)
	durable := make([]*op, 0, maxBatch)
	for {
		o, ok := <-w.ops
		if !ok {
			return
		}
		group = append(group[:0], o)
		open := true
	drain:
		for len(group) < maxBatch {
			select {
			case o, ok := <-w.ops:
				if !ok {
					open = false
					break drain
				}
				group = append(group, o)
			default:
				break drain
			}
		}
		// Lease bookkeeping (a claim, say) does not wait for the fsync of
		// the durable operations it arrived with: it commits first, in a
		// transaction of its own without a sync. The operations of one
		// group were all submitted before any of them was answered, so no
		// caller can tell in which order they ran.
		quick, durable = quick[:0], durable[:0]
		for _, o := range group {
			if o.durable {
				durable = append(durable, o)
			} else {
				quick = append(quick, o)
			}
		}
		if len(quick) > 0 {
			w.commit(quick, false)
		}
		if len(durable) > 0 {
			w.commit(durable, true)
		}
		if !open {
			return
		}
	}
}

// commit runs one group in one transaction and answers its callers; a
// durable group is on disk before they hear back.
func (w *writer) commit(group []*op, durable bool) {
	// A group that cannot commit is a storage failure (disk full, I/O
	// error): every caller hears ErrUnavailable and may retry.
	fail := func(err error) {
		err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		for _, o := range group {
			o.done <- err
		}
	}
	if durable != w.full {
		mode := "NORMAL"
		if durable {
			mode = "FULL"
		}
		if err := w.exec("PRAGMA synchronous = " + mode); err != nil {
			fail(fmt.Errorf("set synchronous: %w", err))
			return
		}
		w.full = durable
	}

	if err := w.exec("BEGIN IMMEDIATE"); err != nil {
		fail(fmt.Errorf("begin: %w", err))
		return
	}
	results := make([]error, len(group))
	for i, o := range group {
		if err := o.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		var err error
		results[i], err = w.apply(o)
		if err != nil { // the transaction itself is broken
			w.rollback()
			fail(err)
			return
		}
	}
	if err := w.exec("COMMIT"); err != nil {
		w.rollback()
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	for i, o := range group {
		if results[i] == nil {
			w.s.subs.Publish(o.changes)
		}
		o.done <- results[i]
	}
}

// apply runs o in a savepoint. It returns o's own error, and a second error
// when the savepoint could not be managed (the whole group fails then).
func (w *writer) apply(o *op) (opErr, txErr error) {
	if err := w.exec("SAVEPOINT op"); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	t := &txn{w: w, now: w.s.clock.Now()}
	if err := o.fn(t); err != nil {
		if rerr := w.exec("ROLLBACK TO op"); rerr != nil {
			return nil, fmt.Errorf("rollback to savepoint: %w", rerr)
		}
		if rerr := w.exec("RELEASE op"); rerr != nil {
			return nil, fmt.Errorf("release savepoint: %w", rerr)
		}
		return err, nil
	}
	if err := w.exec("RELEASE op"); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	o.changes = t.changes
	return nil, nil
}

// exec runs a statement without arguments on the write connection.
func (w *writer) exec(query string) error {
	st, err := w.stmt(query)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(context.Background())
	return err
}

// stmt returns query prepared on the write connection, once for the life
// of the store.
func (w *writer) stmt(query string) (*sql.Stmt, error) {
	if st, ok := w.stmts[query]; ok {
		return st, nil
	}
	st, err := w.conn.PrepareContext(context.Background(), query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	w.stmts[query] = st
	return st, nil
}

// rollback abandons the open transaction. SQLite may have rolled it back
// already (after an I/O error, say); that error is of no further interest.
func (w *writer) rollback() {
	if err := w.exec("ROLLBACK"); err != nil {
		w.s.log.Debug("rollback", "err", err)
	}
}

// exec runs a statement and returns how many rows it changed.
func (t *txn) exec(query string, args ...any) (int64, error) {
	st, err := t.w.stmt(query)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(context.Background(), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// query runs a statement that returns rows.
func (t *txn) query(query string, args ...any) (*sql.Rows, error) {
	st, err := t.w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(context.Background(), args...)
}

// queryRow runs a statement that returns at most one row.
func (t *txn) queryRow(query string, args ...any) *sql.Row {
	st, err := t.w.stmt(query)
	if err != nil {
		// A Row cannot carry an error of its own; running the query
		// unprepared reports the same error at Scan.
		return t.w.conn.QueryRowContext(context.Background(), query, args...)
	}
	return st.QueryRowContext(context.Background(), args...)
}

// announce queues a change to publish after the commit.
func (t *txn) announce(c store.Change) {
	c.At = t.now
	t.changes = append(t.changes, c)
}
