package sqlite

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// runColumns is the column list scanRun reads.
const runColumns = `id, function_id, event_id, event_ids, status, attempt, created_at, started_at,
ended_at, available_at, output, error, idempotency_key, singleton_key, debounce_key, concurrency_key,
concurrency_limit, finish_timeout_ms, finish_by, lease_owner`

// stepColumns is the column list scanStep reads.
// The usual step stores NULL for its name, kind and status
// (0003_lean_records.sql), and a step that started and ended its duration
// instead of its end (0005_keyed_by_ulid.sql). A step refers to its run by
// the run's row number (0006_runs_numbered.sql): the columns are those of
// stepsOfRuns, steps s joined to their runs r.
const stepColumns = `r.id, s.id, COALESCE(s.name, s.id), COALESCE(s.kind, 'run'), COALESCE(s.status, 'Completed'),
s.attempts, s.output, s.error, s.wake_at, s.started_at, COALESCE(s.ended_at, s.started_at + s.duration), s.wait`

// stepsOfRuns is the FROM clause stepColumns reads.
const stepsOfRuns = `steps s JOIN runs r ON r.n = s.run`

// eventColumns is the column list scanEvent reads. The event's ts is
// stored as its lag behind received_at (0005_keyed_by_ulid.sql).
const eventColumns = `id, client_id, name, data, user, received_at - ts_lag, version, received_at`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// prefixed scans its first columns into first and the rest into the
// destinations Scan is given, for a query that returns more than a scan
// function reads.
type prefixed struct {
	sc    scanner
	first []any
}

func (p prefixed) Scan(dest ...any) error {
	return p.sc.Scan(append(p.first[:len(p.first):len(p.first)], dest...)...)
}

func scanRun(sc scanner) (store.Run, error) {
	var (
		r                                        store.Run
		eventIDs                                 string
		created                                  int64
		started, ended, avail, finishBy          sql.NullInt64
		output, errText, idem, single, deb, conc sql.NullString
		owner                                    sql.NullString
		finishTimeout                            int64
	)
	if err := sc.Scan(&r.ID, &r.FunctionID, &r.EventID, &eventIDs, &r.Status, &r.Attempt, &created,
		&started, &ended, &avail, &output, &errText, &idem, &single, &deb, &conc,
		&r.ConcurrencyLimit, &finishTimeout, &finishBy, &owner); err != nil {
		return store.Run{}, err
	}
	// A run fed by one event has no list of them (0003_lean_records.sql).
	r.EventIDs = []string{r.EventID}
	if eventIDs != "" {
		if err := json.Unmarshal([]byte(eventIDs), &r.EventIDs); err != nil {
			return store.Run{}, fmt.Errorf("run %s: event ids: %w", r.ID, err)
		}
	}
	r.CreatedAt = time.UnixMilli(created).UTC()
	r.StartedAt, r.EndedAt, r.AvailableAt, r.FinishBy = fromMS(started), fromMS(ended), fromMS(avail), fromMS(finishBy)
	r.Output, r.Error = rawJSON(output), errText.String
	r.IdempotencyKey, r.SingletonKey, r.DebounceKey, r.ConcurrencyKey = idem.String, single.String, deb.String, conc.String
	r.FinishTimeout = time.Duration(finishTimeout) * time.Millisecond
	r.LeaseOwner = owner.String
	return r, nil
}

func scanSteps(rows *sql.Rows) ([]store.Step, error) {
	defer rows.Close()
	steps := []store.Step{}
	for rows.Next() {
		var (
			s                               store.Step
			attempts, output, errText, wait sql.NullString
			wake, started, ended            sql.NullInt64
		)
		if err := rows.Scan(&s.RunID, &s.ID, &s.Name, &s.Kind, &s.Status, &attempts, &output, &errText,
			&wake, &started, &ended, &wait); err != nil {
			return nil, err
		}
		s.WakeAt, s.StartedAt, s.EndedAt = fromMS(wake), fromMS(started), fromMS(ended)
		var err error
		if s.Attempts, err = decodeAttempts(rawJSON(attempts), s.StartedAt, s.EndedAt); err != nil {
			return nil, fmt.Errorf("step %s/%s: attempts: %w", s.RunID, s.ID, err)
		}
		if wait.Valid {
			s.Wait = new(store.Wait)
			if err := json.Unmarshal([]byte(wait.String), s.Wait); err != nil {
				return nil, fmt.Errorf("step %s/%s: wait: %w", s.RunID, s.ID, err)
			}
		}
		s.Output, s.Error = rawJSON(output), errText.String
		steps = append(steps, s)
	}
	return steps, rows.Err()
}

func scanEvent(sc scanner) (store.Event, error) {
	var (
		e               store.Event
		client, version sql.NullString
		data, user      sql.NullString
		received        int64
	)
	if err := sc.Scan(&e.ID, &client, &e.Name, &data, &user, &e.TS, &version, &received); err != nil {
		return store.Event{}, err
	}
	e.ClientID, e.Version = client.String, version.String
	e.Data, e.User = rawJSON(data), rawJSON(user)
	e.ReceivedAt = time.UnixMilli(received).UTC()
	return e, nil
}

// GetEvent returns the event with that id.
func (s *Store) GetEvent(ctx context.Context, id string) (store.Event, error) {
	if err := s.open("get event"); err != nil {
		return store.Event{}, err
	}
	e, err := scanEvent(s.readRow(ctx, `SELECT `+eventColumns+` FROM events WHERE id = ?`, id))
	return e, wrap("get event", err)
}

// EventByClientID returns the event the live client id maps to.
func (s *Store) EventByClientID(ctx context.Context, clientID string) (store.Event, error) {
	if err := s.open("get event"); err != nil {
		return store.Event{}, err
	}
	e, err := scanEvent(s.readRow(ctx, `SELECT `+eventColumns+` FROM events WHERE id =
  (SELECT event_id FROM event_client_ids WHERE client_id = ? AND (expires_at IS NULL OR expires_at > ?))`,
		clientID, s.clock.Now().UnixMilli()))
	return e, wrap("get event", err)
}

// GetRun returns the run with that id.
func (s *Store) GetRun(ctx context.Context, id string) (store.Run, error) {
	if err := s.open("get run"); err != nil {
		return store.Run{}, err
	}
	r, err := scanRun(s.readRow(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ?`, id))
	return r, wrap("get run", err)
}

// Steps returns the run's steps in the order they were first recorded;
// ErrNotFound when there is no such run.
func (s *Store) Steps(ctx context.Context, runID string) ([]store.Step, error) {
	if err := s.open("steps"); err != nil {
		return nil, err
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, wrap("steps", err)
	}
	defer tx.Rollback()
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT n FROM runs WHERE id = ?`, runID).Scan(&n); err != nil {
		return nil, wrap("steps", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+stepColumns+` FROM `+stepsOfRuns+` WHERE s.run = ? ORDER BY s.seq`, n)
	if err != nil {
		return nil, wrap("steps", err)
	}
	steps, err := scanSteps(rows)
	return steps, wrap("steps", err)
}

// ListRuns lists runs newest first (by ULID).
func (s *Store) ListRuns(ctx context.Context, f store.RunFilter) (store.Page[store.Run], error) {
	query, args, limit, err := runsQuery(f)
	return listPage(ctx, s, "list runs", "run", query, args, limit, err, scanRun, func(r store.Run) string { return r.ID })
}

// listPage runs a listing's query, which reads one item more than limit,
// and returns the page with the cursor of the next one when that item
// came; err is the query builder's.
func listPage[T any](ctx context.Context, s *Store, op, kind, query string, args []any, limit int, err error,
	scan func(scanner) (T, error), id func(T) string) (store.Page[T], error) {
	if err := s.open(op); err != nil {
		return store.Page[T]{}, err
	}
	if err != nil {
		return store.Page[T]{}, wrap(op, err)
	}
	rows, err := s.rdb.QueryContext(ctx, query, args...)
	if err != nil {
		return store.Page[T]{}, wrap(op, err)
	}
	defer rows.Close()
	page := store.Page[T]{Items: []T{}}
	for rows.Next() {
		item, err := scan(rows)
		if err != nil {
			return store.Page[T]{}, wrap(op, err)
		}
		page.Items = append(page.Items, item)
	}
	if err := rows.Err(); err != nil {
		return store.Page[T]{}, wrap(op, err)
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		page.Cursor = encodeCursor(kind, id(page.Items[limit-1]))
	}
	return page, nil
}

// runsQuery is the query of a ListRuns page and its arguments; it reads one
// run more than the page's limit, to know whether another page follows.
// Every filter is served by an index (TestListingsUseIndexes).
func runsQuery(f store.RunFilter) (string, []any, int, error) {
	var (
		where []string
		args  []any
	)
	if f.Cursor != "" {
		after, err := decodeCursor("run", f.Cursor)
		if err != nil {
			return "", nil, 0, err
		}
		where, args = append(where, "id < ?"), append(args, after)
	}
	if f.FunctionID != "" {
		where, args = append(where, "function_id = ?"), append(args, f.FunctionID)
	}
	if len(f.Statuses) > 0 {
		where = append(where, "status IN ("+strings.Repeat("?, ", len(f.Statuses)-1)+"?)")
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
		if len(f.Statuses) == 1 && f.Statuses[0] != store.StatusCompleted {
			// The condition of the partial indexes of the runs that did not
			// complete (0004_unusual_status.sql), so that SQLite uses them.
			where = append(where, "status <> 'Completed'")
		}
	}
	if !f.Since.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where, args = append(where, "created_at < ?"), append(args, f.Until.UnixMilli())
	}
	if f.EventID != "" {
		where = append(where, "id IN (SELECT id FROM runs WHERE event_id = ? UNION ALL SELECT run_id FROM run_events WHERE event_id = ?)")
		args = append(args, f.EventID, f.EventID)
	}
	limit := store.PageLimit(f.Limit)
	return `SELECT ` + runColumns + ` FROM runs` + whereClause(where) + ` ORDER BY id DESC LIMIT ?`,
		append(args, limit+1), limit, nil
}

// ListEvents lists events newest first (by ULID).
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) (store.Page[store.Event], error) {
	query, args, limit, err := eventsQuery(f)
	return listPage(ctx, s, "list events", "event", query, args, limit, err, scanEvent, func(e store.Event) string { return e.ID })
}

// eventsQuery is the query of a ListEvents page and its arguments, as
// runsQuery is for runs.
func eventsQuery(f store.EventFilter) (string, []any, int, error) {
	var (
		where []string
		args  []any
	)
	if f.Cursor != "" {
		after, err := decodeCursor("event", f.Cursor)
		if err != nil {
			return "", nil, 0, err
		}
		where, args = append(where, "id < ?"), append(args, after)
	}
	if f.Name != "" {
		where, args = append(where, "name = ?"), append(args, f.Name)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "received_at >= ?"), append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where, args = append(where, "received_at < ?"), append(args, f.Until.UnixMilli())
	}
	limit := store.PageLimit(f.Limit)
	return `SELECT ` + eventColumns + ` FROM events` + whereClause(where) + ` ORDER BY id DESC LIMIT ?`,
		append(args, limit+1), limit, nil
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// encodeCursor makes the opaque cursor that continues a listing of kind
// after id.
func encodeCursor(kind, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + id))
}

func decodeCursor(kind, cursor string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return "", fmt.Errorf("%w: malformed cursor", store.ErrInvalid)
	}
	id, ok := strings.CutPrefix(string(raw), kind+":")
	if !ok || id == "" {
		return "", fmt.Errorf("%w: malformed cursor", store.ErrInvalid)
	}
	return id, nil
}
