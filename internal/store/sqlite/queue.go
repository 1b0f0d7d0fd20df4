package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/store"
)

const (
	// claimPage is how many more runs Claim reads at a time once runs are
	// held back by their concurrency limit.
	claimPage = 64
	// maxClaimScan bounds how many runs one Claim looks at, so runs held
	// back by their concurrency limit cannot make it scan the whole queue.
	maxClaimScan = 4096
)

// leaseCheck is the WHERE clause of every call that needs the caller's
// lease to be current: the token matches, the lease has not lapsed and the
// run is unfinished. Its arguments are the run id, the token and now.
const leaseCheck = `id = ? AND lease_token = ? AND available_at > ? AND ended_at IS NULL`

// Claim leases up to n claimable runs, oldest AvailableAt first, skipping
// the runs whose concurrency key is at its limit.
func (s *Store) Claim(ctx context.Context, owner string, n int, ttl time.Duration) ([]store.Lease, error) {
	if err := store.ValidateLeaseTTL(ttl); err != nil {
		return nil, wrap("claim", err)
	}
	if n <= 0 {
		return nil, s.open("claim")
	}
	var leases []store.Lease
	err := s.write(ctx, "claim", false, func(t *txn) error {
		var err error
		leases, err = t.claim(owner, n, ttl)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Events never change, so the read pool serves them after the commit
	// and the single writer does no more than the lease itself.
	if err := s.triggerEvents(ctx, leases); err != nil {
		s.log.Debug("reading the trigger events of claimed runs; the workers will", "err", err)
	}
	return leases, nil
}

// candidate is a claimable run Claim considers.
type candidate struct {
	id      string
	key     string
	limit   int
	resumed bool // it ran before, so it may have recorded steps
	// leased: it still holds a (lapsed) lease, so claiming it takes it
	// over. The candidates are read in the claim's write transaction, so
	// this is the lease the UPDATE replaces.
	leased bool
}

func (t *txn) claim(owner string, n int, ttl time.Duration) ([]store.Lease, error) {
	now := t.now.UnixMilli()
	until := t.now.Add(ttl)
	leased := make(map[string]int) // concurrency key -> runs leased now
	var out []store.Lease
	// Claimed runs leave the claimable range (their available_at becomes
	// the lease expiry), so the next page starts after the skipped ones.
	skipped, scanned := 0, 0
	for len(out) < n && scanned < maxClaimScan {
		// Read as many as are still wanted, and more once some were held
		// back by their concurrency limit.
		limit := n - len(out) + min(skipped, claimPage)
		cands, err := t.candidates(now, skipped, limit)
		if err != nil {
			return nil, err
		}
		var chosen []candidate
		for _, c := range cands {
			scanned++
			if c.key != "" && c.limit > 0 {
				cnt, ok := leased[c.key]
				if !ok {
					if err := t.queryRow(`SELECT COUNT(*) FROM runs
WHERE concurrency_key = ? AND lease_token IS NOT NULL AND available_at > ?`, c.key, now).Scan(&cnt); err != nil {
						return nil, fmt.Errorf("concurrency: %w", err)
					}
				}
				if cnt >= c.limit {
					leased[c.key] = cnt
					skipped++
					continue
				}
				leased[c.key] = cnt + 1
			}
			chosen = append(chosen, c)
			if len(out)+len(chosen) == n {
				break
			}
		}
		leases, err := t.lease(chosen, owner, until)
		if err != nil {
			return nil, err
		}
		out = append(out, leases...)
		if len(cands) < limit {
			break // the claimable runs are exhausted
		}
	}
	return out, nil
}

// candidates reads up to limit claimable runs in queue order, after the
// first offset.
//
// The limit is bound as "? + 0", not as a bare parameter: SQLite plans a
// query around the value bound to a bare LIMIT parameter and then expires
// the prepared statement whenever that value changes, so with the free
// slots varying from claim to claim every claim parsed and planned the
// query again.
func (t *txn) candidates(now int64, offset, limit int) ([]candidate, error) {
	rows, err := t.query(`SELECT id, concurrency_key, concurrency_limit, started_at IS NOT NULL, lease_token IS NOT NULL FROM runs
WHERE available_at <= ? ORDER BY available_at LIMIT ? + 0 OFFSET ?`, now, limit, offset)
	if err != nil {
		return nil, fmt.Errorf("candidates: %w", err)
	}
	defer rows.Close()
	var cands []candidate
	for rows.Next() {
		var c candidate
		var key sql.NullString
		if err := rows.Scan(&c.id, &key, &c.limit, &c.resumed, &c.leased); err != nil {
			return nil, fmt.Errorf("candidates: %w", err)
		}
		c.key = key.String
		cands = append(cands, c)
	}
	return cands, rows.Err()
}

// lease gives each chosen run a lease of its own until until, in one
// statement, and returns the leases in the order chosen, each with the
// steps its run recorded before (a run that never ran has none).
func (t *txn) lease(chosen []candidate, owner string, until time.Time) ([]store.Lease, error) {
	if len(chosen) == 0 {
		return nil, nil
	}
	ids := make([]string, len(chosen))
	var resumed []string
	for i, c := range chosen {
		ids[i] = c.id
		if c.resumed {
			resumed = append(resumed, c.id)
		}
	}
	idList, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	rows, err := t.query(`UPDATE runs SET status = 'Running',
started_at = COALESCE(started_at, ?1),
finish_by = CASE WHEN finish_by IS NULL AND finish_timeout_ms > 0
    THEN COALESCE(started_at, ?1) + finish_timeout_ms ELSE finish_by END,
lease_owner = ?2, lease_token = lower(hex(randomblob(16))), available_at = ?3, woken_at = NULL
WHERE id IN (SELECT value FROM json_each(?4)) RETURNING lease_token, `+runColumns,
		t.now.UnixMilli(), owner, until.UnixMilli(), string(idList))
	if err != nil {
		return nil, fmt.Errorf("lease runs: %w", err)
	}
	leases := make(map[string]*store.Lease, len(chosen))
	for rows.Next() {
		l := &store.Lease{Owner: owner, Until: until}
		if l.Run, err = scanRun(prefixed{rows, []any{&l.Token}}); err != nil {
			rows.Close()
			return nil, fmt.Errorf("lease runs: %w", err)
		}
		l.RunID = l.Run.ID
		leases[l.RunID] = l
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("lease runs: %w", err)
	}
	if len(resumed) > 0 {
		if err := t.resumedSteps(resumed, leases); err != nil {
			return nil, err
		}
	}
	out := make([]store.Lease, 0, len(chosen))
	for i, id := range ids {
		l, ok := leases[id]
		if !ok {
			return nil, fmt.Errorf("lease run %s: %w", id, sql.ErrNoRows)
		}
		l.TakenOver = chosen[i].leased
		t.announce(store.Change{Kind: store.ChangeRun, RunID: id, FunctionID: l.Run.FunctionID, Status: l.Run.Status})
		out = append(out, *l)
	}
	return out, nil
}

// triggerEvents adds to each lease its run's trigger event, in one query.
func (s *Store) triggerEvents(ctx context.Context, leases []store.Lease) error {
	if len(leases) == 0 {
		return nil
	}
	ids := make([]string, len(leases))
	for i, l := range leases {
		ids[i] = l.Run.EventID
	}
	idList, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
WHERE id IN (SELECT value FROM json_each(?))`, string(idList))
	if err != nil {
		return err
	}
	events := make(map[string]store.Event, len(ids))
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			rows.Close()
			return err
		}
		events[ev.ID] = ev
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for i := range leases {
		leases[i].Event = events[leases[i].Run.EventID]
	}
	return nil
}

// resumedSteps adds to each lease the steps its run recorded, in the order
// they were first recorded.
func (t *txn) resumedSteps(runIDs []string, leases map[string]*store.Lease) error {
	idList, err := json.Marshal(runIDs)
	if err != nil {
		return err
	}
	rows, err := t.query(`SELECT `+stepColumns+` FROM `+stepsOfRuns+`
WHERE r.id IN (SELECT value FROM json_each(?)) ORDER BY r.id, s.seq`, string(idList))
	if err != nil {
		return fmt.Errorf("steps: %w", err)
	}
	steps, err := scanSteps(rows)
	if err != nil {
		return fmt.Errorf("steps: %w", err)
	}
	for _, st := range steps {
		if l, ok := leases[st.RunID]; ok {
			l.Steps = append(l.Steps, st)
		}
	}
	return nil
}

// RenewLeases extends each lease to now+ttl, in one transaction.
func (s *Store) RenewLeases(ctx context.Context, ls []*store.Lease, ttl time.Duration) ([]error, error) {
	if err := store.ValidateLeaseTTL(ttl); err != nil {
		return nil, wrap("renew leases", err)
	}
	var until time.Time
	errs := make([]error, len(ls))
	err := s.write(ctx, "renew leases", false, func(t *txn) error {
		until = t.now.Add(ttl)
		for i, l := range ls {
			n, err := t.exec(`UPDATE runs SET available_at = ? WHERE `+leaseCheck,
				until.UnixMilli(), l.RunID, l.Token, t.now.UnixMilli())
			if err != nil {
				return err
			}
			if n == 0 {
				errs[i] = wrap("renew lease", store.ErrLeaseLost)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, l := range ls {
		if errs[i] == nil {
			l.Until = until
			l.Run.AvailableAt = until
		}
	}
	return errs, nil
}

// SaveStep records a step under the caller's lease and publishes emit in
// the same transaction.
func (s *Store) SaveStep(ctx context.Context, l *store.Lease, st store.Step, emit []store.Publication) error {
	return s.CommitStep(ctx, l, st, emit, store.Effects{})
}

// CommitStep records a step with its KV effects in one transaction: the
// lease, then every read, then the writes, the step and emit.
func (s *Store) CommitStep(ctx context.Context, l *store.Lease, st store.Step, emit []store.Publication, fx store.Effects) error {
	return s.CommitSteps(ctx, l, []store.StepCommit{{Step: st, Emit: emit, Effects: fx}})
}

// CommitSteps records steps with their KV effects in one transaction, as
// CommitStep records one.
func (s *Store) CommitSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit) error {
	_, err := s.commitSteps(ctx, l, steps, false)
	return err
}

// CommitStepsCount records steps as CommitSteps does, the last of them
// counted (store.CheckCounted): its output is the value its increment
// left, read in the same transaction.
func (s *Store) CommitStepsCount(ctx context.Context, l *store.Lease, steps []store.StepCommit) (int64, error) {
	if err := store.CheckCounted(steps); err != nil {
		return 0, wrap("save step", err)
	}
	return s.commitSteps(ctx, l, steps, true)
}

// commitSteps records steps in one transaction (saveLeasedSteps), the
// last of them counted when counted, and returns the counted value.
func (s *Store) commitSteps(ctx context.Context, l *store.Lease, steps []store.StepCommit, counted bool) (int64, error) {
	batch, err := prepareSteps(l, steps)
	if err != nil {
		return 0, wrap("save step", err)
	}
	batch.counted = counted
	var n int64
	err = s.write(ctx, "save step", true, func(t *txn) error {
		var err error
		n, err = t.saveLeasedSteps(l, batch)
		return err
	})
	return n, err
}

// stepBatch is a batch of steps checked and encoded outside the
// transaction that records it.
type stepBatch struct {
	fx    store.Effects
	steps []preparedStep
	// counted: the last step's output is the value the last write (an
	// increment) left (CommitStepsCount).
	counted bool
}

// preparedStep is one step of a stepBatch, with its encoded columns.
type preparedStep struct {
	store.Step
	emit     []store.Publication
	name     string // "" when the id
	attempts any    // encodeAttempts
	wait     []byte // the wait's JSON, nil when none
}

// prepareSteps validates and encodes steps of the leased run.
func prepareSteps(l *store.Lease, steps []store.StepCommit) (stepBatch, error) {
	var b stepBatch
	if len(steps) == 0 {
		return b, nil
	}
	fx, err := store.MergeEffects(steps)
	if err != nil {
		return b, err
	}
	b.fx = fx
	for _, sc := range steps {
		st, err := sc.Step.Normalized()
		if err != nil {
			return b, err
		}
		st.RunID = l.RunID
		for _, p := range sc.Emit {
			if err := p.Validate(); err != nil {
				return b, err
			}
		}
		ps := preparedStep{Step: st, emit: sc.Emit, name: st.Name}
		if ps.name == st.ID {
			ps.name = ""
		}
		if ps.attempts, err = encodeAttempts(st); err != nil {
			return b, err
		}
		if st.Wait != nil {
			if ps.wait, err = json.Marshal(st.Wait); err != nil {
				return b, fmt.Errorf("%w: wait: %w", store.ErrInvalid, err)
			}
		}
		b.steps = append(b.steps, ps)
	}
	return b, nil
}

// saveLeasedSteps checks the run's lease (store.ErrLeaseLost), applies a
// batch's effects and records its steps. It returns the value the batch's
// last write left when that is an increment (the counted value), else 0.
func (t *txn) saveLeasedSteps(l *store.Lease, b stepBatch) (int64, error) {
	var fn string
	var n int64 // runs.n, what the run's steps and waits refer to
	err := t.queryRow(`SELECT n, function_id FROM runs WHERE `+leaseCheck, l.RunID, l.Token, t.now.UnixMilli()).Scan(&n, &fn)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, store.ErrLeaseLost
	}
	if err != nil {
		return 0, err
	}
	counted, err := t.applyEffects(b.fx)
	if err != nil {
		return 0, err
	}
	for i, st := range b.steps {
		if b.counted && i == len(b.steps)-1 {
			st.Output = json.RawMessage(strconv.FormatInt(counted, 10))
		}
		ended, duration := stepEnd(st.StartedAt, st.EndedAt)
		// seq numbers a run's steps in the order first recorded; an update
		// keeps it. Steps are only ever deleted with their run.
		if _, err := t.exec(`INSERT INTO steps (run, id, seq, name, kind, status, attempts, output, error,
wake_at, started_at, ended_at, duration, wait) VALUES (?1, ?2, (SELECT COUNT(*) FROM steps WHERE run = ?1),
?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (run, id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
status = excluded.status, attempts = excluded.attempts, output = excluded.output,
error = excluded.error, wake_at = excluded.wake_at, started_at = excluded.started_at,
ended_at = excluded.ended_at, duration = excluded.duration, wait = excluded.wait`,
			n, st.ID, nullStr(st.name), stepCode(string(st.Kind), string(store.StepRun)),
			stepCode(string(st.Status), string(store.StatusCompleted)), st.attempts,
			nullJSON(st.Output), nullStr(st.Error), ms(st.WakeAt), ms(st.StartedAt), ended, duration,
			nullJSON(st.wait)); err != nil {
			return 0, fmt.Errorf("upsert step: %w", err)
		}
		var err error
		if st.Status == store.StatusWaiting && st.Wait != nil {
			w := st.Wait
			_, err = t.exec(`INSERT OR REPLACE INTO waits (run, step_id, event_name, match_path,
match_value, expires_at) VALUES (?, ?, ?, ?, ?, ?)`, n, st.ID, w.Event,
				nullStr(w.MatchPath), nullJSON(w.MatchValue), ms(st.WakeAt))
		} else {
			_, err = t.exec(`DELETE FROM waits WHERE run = ? AND step_id = ?`, n, st.ID)
		}
		if err != nil {
			return 0, fmt.Errorf("wait: %w", err)
		}
		t.announce(store.Change{Kind: store.ChangeStep, RunID: st.RunID, FunctionID: fn, StepID: st.ID,
			Status: st.Status})
		for _, p := range st.emit {
			if _, err := t.publish(p); err != nil {
				return 0, err
			}
		}
	}
	return counted, nil
}

// Suspend ends the lease and makes the run claimable at s.AvailableAt (at
// once when a wait of the run matched meanwhile).
func (s *Store) Suspend(ctx context.Context, l *store.Lease, sus store.Suspension) error {
	if err := sus.Validate(); err != nil {
		return wrap("suspend", err)
	}
	return s.write(ctx, "suspend", true, func(t *txn) error {
		at := sus.AvailableAt
		if at.IsZero() {
			at = t.now
		}
		var (
			fn     string
			status store.Status
			avail  int64
		)
		err := t.queryRow(`UPDATE runs SET
status = CASE WHEN woken_at IS NULL THEN ?1 ELSE 'Running' END,
attempt = ?2,
available_at = CASE WHEN woken_at IS NULL OR woken_at > ?3 THEN ?3 ELSE woken_at END,
lease_owner = NULL, lease_token = NULL, woken_at = NULL
WHERE id = ?4 AND lease_token = ?5 AND available_at > ?6 AND ended_at IS NULL
RETURNING function_id, status, available_at`,
			string(sus.Status), sus.Attempt, at.UnixMilli(), l.RunID, l.Token, t.now.UnixMilli()).
			Scan(&fn, &status, &avail)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrLeaseLost
		}
		if err != nil {
			return err
		}
		t.announce(store.Change{Kind: store.ChangeRun, RunID: l.RunID, FunctionID: fn, Status: status,
			AvailableAt: time.UnixMilli(avail).UTC()})
		return nil
	})
}

// Finish ends the run under the caller's lease and publishes o.Emit with it.
func (s *Store) Finish(ctx context.Context, l *store.Lease, o store.Outcome) error {
	if err := o.Validate(); err != nil {
		return wrap("finish", err)
	}
	batch, err := prepareSteps(l, o.Steps)
	if err != nil {
		return wrap("finish", err)
	}
	return s.write(ctx, "finish", true, func(t *txn) error {
		if len(batch.steps) > 0 {
			if _, err := t.saveLeasedSteps(l, batch); err != nil {
				return err
			}
		}
		var fn string
		var n int64 // runs.n, what the run's waits refer to
		err := t.queryRow(`UPDATE runs SET status = ?, output = ?, error = ?, ended_at = ?,
available_at = NULL, lease_owner = NULL, lease_token = NULL, woken_at = NULL
WHERE `+leaseCheck+` RETURNING n, function_id`,
			string(o.Status), nullJSON(o.Output), nullStr(o.Error), t.now.UnixMilli(),
			l.RunID, l.Token, t.now.UnixMilli()).Scan(&n, &fn)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrLeaseLost
		}
		if err != nil {
			return err
		}
		if _, err := t.exec(`DELETE FROM waits WHERE run = ?`, n); err != nil {
			return fmt.Errorf("waits: %w", err)
		}
		t.announce(store.Change{Kind: store.ChangeRun, RunID: l.RunID, FunctionID: fn, Status: o.Status})
		for _, p := range o.Emit {
			if _, err := t.publish(p); err != nil {
				return err
			}
		}
		return nil
	})
}

// Release hands a leased run back, claimable at once and otherwise
// unchanged.
func (s *Store) Release(ctx context.Context, l *store.Lease) error {
	return s.write(ctx, "release", false, func(t *txn) error {
		var (
			fn     string
			status store.Status
		)
		err := t.queryRow(`UPDATE runs SET available_at = ?, lease_owner = NULL, lease_token = NULL,
woken_at = NULL WHERE `+leaseCheck+` RETURNING function_id, status`,
			t.now.UnixMilli(), l.RunID, l.Token, t.now.UnixMilli()).Scan(&fn, &status)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrLeaseLost
		}
		if err != nil {
			return err
		}
		t.announce(store.Change{Kind: store.ChangeRun, RunID: l.RunID, FunctionID: fn, Status: status,
			AvailableAt: t.now})
		return nil
	})
}

// CancelRun cancels an unfinished run; a worker holding it loses its lease.
func (s *Store) CancelRun(ctx context.Context, id, reason string) (store.Run, error) {
	var run store.Run
	err := s.write(ctx, "cancel run", true, func(t *txn) error {
		var n int64
		var ended sql.NullInt64
		if err := t.queryRow(`SELECT n, ended_at FROM runs WHERE id = ?`, id).Scan(&n, &ended); err != nil {
			return err
		}
		if ended.Valid {
			return store.ErrFinished
		}
		var err error
		run, err = scanRun(t.queryRow(`UPDATE runs SET status = 'Cancelled', error = ?, ended_at = ?,
available_at = NULL, lease_owner = NULL, lease_token = NULL, woken_at = NULL
WHERE id = ? RETURNING `+runColumns, nullStr(reason), t.now.UnixMilli(), id))
		if err != nil {
			return err
		}
		if _, err := t.exec(`DELETE FROM waits WHERE run = ?`, n); err != nil {
			return fmt.Errorf("waits: %w", err)
		}
		t.announce(store.Change{Kind: store.ChangeRun, RunID: id, FunctionID: run.FunctionID,
			Status: store.StatusCancelled})
		return nil
	})
	if err != nil {
		return store.Run{}, err
	}
	return run, nil
}

// NextWake is the earliest available_at of an unfinished run.
func (s *Store) NextWake(ctx context.Context) (time.Time, bool, error) {
	if err := s.open("next wake"); err != nil {
		return time.Time{}, false, err
	}
	var at sql.NullInt64
	if err := s.readRow(ctx,
		`SELECT MIN(available_at) FROM runs WHERE available_at IS NOT NULL`).Scan(&at); err != nil {
		return time.Time{}, false, wrap("next wake", err)
	}
	if !at.Valid {
		return time.Time{}, false, nil
	}
	return fromMS(at), true, nil
}

// QueueDepth counts the runs claimable now.
func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	if err := s.open("queue depth"); err != nil {
		return 0, err
	}
	var n int
	if err := s.readRow(ctx, `SELECT COUNT(*) FROM runs WHERE available_at <= ?`,
		s.clock.Now().UnixMilli()).Scan(&n); err != nil {
		return 0, wrap("queue depth", err)
	}
	return n, nil
}

// The runs and events Prune deletes: both walk the primary key up to the
// cutoff's ULID prefix (0005_keyed_by_ulid.sql) and check the time as
// well, so an id whose time is behind (an official client's seeded event
// id, engine.SeededIDs) is not dropped early; one ahead is kept longer.
// Their arguments are that prefix, the cutoff in ms and the batch.
const (
	pruneRuns   = `DELETE FROM runs WHERE n IN (SELECT n FROM runs WHERE id < ? AND ended_at < ? LIMIT ?)`
	pruneEvents = `DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id < ? AND e.received_at < ?
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id AND r.ended_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM run_events re JOIN runs r ON r.id = re.run_id
                  WHERE re.event_id = e.id AND r.ended_at IS NULL) LIMIT ?)`
)

// Prune deletes, at most batch of each, the runs that finished before
// cutoff (with their steps), the events that arrived before cutoff and have
// no unfinished run, and the expired keys, idempotency keys, client ids and
// rate-limit states.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, batch int) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	var removed int
	// Losing a prune to a crash costs nothing, so it is not durable.
	err := s.write(ctx, "prune", false, func(t *txn) error {
		removed = 0
		now, before, below := t.now.UnixMilli(), cutoff.UnixMilli(), idFloor(cutoff)
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{pruneRuns, []any{below, before, batch}},
			{pruneEvents, []any{below, before, batch}},
			{`DELETE FROM kv WHERE key IN (SELECT key FROM kv WHERE expires_at <= ? LIMIT ?)`,
				[]any{now, batch}},
			{`DELETE FROM idempotency WHERE key IN (SELECT key FROM idempotency WHERE expires_at <= ? LIMIT ?)`,
				[]any{now, batch}},
			{`DELETE FROM event_client_ids WHERE client_id IN
  (SELECT client_id FROM event_client_ids WHERE expires_at <= ? LIMIT ?)`,
				[]any{now, batch}},
			{`DELETE FROM rate_limits WHERE key IN (SELECT key FROM rate_limits WHERE tat <= ? LIMIT ?)`,
				[]any{t.now.UnixNano(), batch}},
		} {
			n, err := t.exec(q.sql, q.args...)
			if err != nil {
				return err
			}
			removed += int(n)
		}
		if removed == 0 {
			return nil
		}
		return t.vacuum()
	})
	if err != nil {
		return 0, err
	}
	return removed, nil
}

// PruneFunction deletes, at most batch, the Completed runs of functionID
// that ended before cutoff (with their steps), and the events they leave
// without any run.
func (s *Store) PruneFunction(ctx context.Context, functionID string, cutoff time.Time, batch int) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	var removed int
	err := s.write(ctx, "prune function", false, func(t *txn) error {
		removed = 0
		// A run's events: its event_id, and those of run_events when it
		// was fed by several.
		rows, err := t.query(`SELECT r.id, r.event_id, re.event_id FROM runs r
LEFT JOIN run_events re ON re.run_id = r.id AND re.event_id != r.event_id
WHERE r.id IN (SELECT id FROM runs WHERE function_id = ? AND id < ? AND status = 'Completed' AND ended_at < ? LIMIT ?)`,
			functionID, idFloor(cutoff), cutoff.UnixMilli(), batch)
		if err != nil {
			return err
		}
		var runs, events []string
		for rows.Next() {
			var run, first string
			var ev sql.NullString
			if err := rows.Scan(&run, &first, &ev); err != nil {
				rows.Close()
				return err
			}
			if len(runs) == 0 || runs[len(runs)-1] != run {
				runs = append(runs, run)
				events = append(events, first)
			}
			if ev.Valid {
				events = append(events, ev.String)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range runs {
			n, err := t.exec(`DELETE FROM runs WHERE id = ?`, id)
			if err != nil {
				return err
			}
			removed += int(n)
		}
		for _, id := range events {
			n, err := t.exec(`DELETE FROM events WHERE id = ?1
AND NOT EXISTS (SELECT 1 FROM runs WHERE event_id = ?1)
AND NOT EXISTS (SELECT 1 FROM run_events WHERE event_id = ?1)`, id)
			if err != nil {
				return err
			}
			removed += int(n)
		}
		if removed == 0 {
			return nil
		}
		return t.vacuum()
	})
	if err != nil {
		return 0, err
	}
	return removed, nil
}

// stepEnd is the ended_at and duration columns of a step that started and
// ended at those times (0005_keyed_by_ulid.sql): the duration when it has
// both, else its end.
func stepEnd(started, ended time.Time) (endedAt, duration any) {
	if started.IsZero() || ended.IsZero() {
		return ms(ended), nil
	}
	return nil, ended.UnixMilli() - started.UnixMilli()
}

// idFloor is the least ULID of the millisecond of t: every id made before
// t sorts below it.
func idFloor(t time.Time) string {
	var id ulid.ULID
	switch {
	case t.UnixMilli() <= 0:
	case uint64(t.UnixMilli()) > ulid.MaxTime():
		id = ulid.ULID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	default:
		_ = id.SetTime(uint64(t.UnixMilli()))
	}
	return id.String()
}

// vacuumPages bounds the free pages one prune gives back to the file system.
const vacuumPages = 2000

// vacuum gives free pages back, so the file shrinks after a prune. It only
// acts on a database created with auto_vacuum=INCREMENTAL (every one Open
// creates); an older file keeps its free pages and reuses them. The pragma
// frees a page per step: read all its rows.
func (t *txn) vacuum() error {
	rows, err := t.query(fmt.Sprintf("PRAGMA incremental_vacuum(%d)", vacuumPages))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
	}
	return rows.Err()
}
