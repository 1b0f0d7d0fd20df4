package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dcyfr/cyberdrew/internal/keypath"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// Publish stores each publication's event and the runs it triggers, in
// order, in one transaction that is on disk before Publish returns.
func (s *Store) Publish(ctx context.Context, pubs []store.Publication) ([]store.Published, error) {
	for _, p := range pubs {
		if err := p.Validate(); err != nil {
			return nil, wrap("publish", err)
		}
	}
	var out []store.Published
	err := s.write(ctx, "publish", true, func(t *txn) error {
		out = make([]store.Published, 0, len(pubs))
		for _, p := range pubs {
			res, err := t.publish(p)
			if err != nil {
				return err
			}
			out = append(out, res)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CreateRuns creates runs for an event already stored, with the same
// flow-control rules as Publish.
func (s *Store) CreateRuns(ctx context.Context, eventID string, specs []store.RunSpec) ([]store.RunRef, error) {
	if err := store.ValidateRunSpecs(specs); err != nil {
		return nil, wrap("create runs", err)
	}
	var refs []store.RunRef
	err := s.write(ctx, "create runs", true, func(t *txn) error {
		var id string
		if err := t.queryRow("SELECT id FROM events WHERE id = ?", eventID).Scan(&id); err != nil {
			return err
		}
		var err error
		refs, err = t.createRuns(eventID, specs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return refs, nil
}

// publish stores one publication: client-id dedup, the event, its runs and
// the waits it completes.
func (t *txn) publish(p store.Publication) (store.Published, error) {
	ev := p.StoredEvent()
	now := t.now.UnixMilli()
	if ev.ClientID != "" {
		var first string
		err := t.queryRow(`SELECT event_id FROM event_client_ids
WHERE client_id = ? AND (expires_at IS NULL OR expires_at > ?)`, ev.ClientID, now).Scan(&first)
		switch {
		case err == nil:
			return store.Published{EventID: first, Duplicate: true}, nil
		case !errors.Is(err, sql.ErrNoRows):
			return store.Published{}, fmt.Errorf("client id: %w", err)
		}
	}
	if ev.ID == "" {
		ev.ID = t.w.s.newULID(t.now)
	} else {
		var one int
		err := t.queryRow(`SELECT 1 FROM events WHERE id = ?`, ev.ID).Scan(&one)
		switch {
		case err == nil:
			return store.Published{EventID: ev.ID, Duplicate: true}, nil
		case !errors.Is(err, sql.ErrNoRows):
			return store.Published{}, fmt.Errorf("event id: %w", err)
		}
	}
	ev.ReceivedAt = t.now
	// The event's ts is stored as its lag behind the receipt
	// (0005_keyed_by_ulid.sql).
	received := ev.ReceivedAt.UnixMilli()
	if _, err := t.exec(`INSERT INTO events (id, client_id, name, data, user, ts_lag, version, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		ev.ID, nullStr(ev.ClientID), ev.Name, nullJSON(ev.Data), nullJSON(ev.User), received-ev.TS,
		nullStr(ev.Version), received); err != nil {
		return store.Published{}, fmt.Errorf("insert event: %w", err)
	}
	if ev.ClientID != "" {
		if _, err := t.exec(`INSERT INTO event_client_ids (client_id, event_id, expires_at) VALUES (?, ?, ?)
ON CONFLICT (client_id) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at`,
			ev.ClientID, ev.ID, expiry(t.now, p.ClientIDTTL)); err != nil {
			return store.Published{}, fmt.Errorf("insert client id: %w", err)
		}
	}
	t.announce(store.Change{Kind: store.ChangeEvent, EventID: ev.ID, EventName: ev.Name})

	refs, err := t.createRuns(ev.ID, p.Runs)
	if err != nil {
		return store.Published{}, err
	}
	for _, ref := range refs {
		if ref.Lease != nil {
			ref.Lease.Event = ev
		}
	}
	if err := t.matchWaits(ev); err != nil {
		return store.Published{}, err
	}
	return store.Published{EventID: ev.ID, Runs: refs}, nil
}

func (t *txn) createRuns(eventID string, specs []store.RunSpec) ([]store.RunRef, error) {
	refs := make([]store.RunRef, 0, len(specs))
	for _, spec := range specs {
		ref, err := t.createRun(eventID, spec)
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", spec.ID, err)
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// createRun applies idempotency, rate limit, singleton and debounce, in
// that order, then inserts the run: Skipped, with the reason as its error,
// when one of the first three refuses it.
func (t *txn) createRun(eventID string, spec store.RunSpec) (store.RunRef, error) {
	now := t.now.UnixMilli()
	status, skip, reason := store.StatusQueued, store.SkipReason(""), ""
	if spec.IdempotencyKey != "" {
		var holder string
		err := t.queryRow(`SELECT r.id FROM idempotency i JOIN runs r ON r.id = i.run_id
WHERE i.key = ? AND (i.expires_at IS NULL OR i.expires_at > ?)`, spec.IdempotencyKey, now).Scan(&holder)
		switch {
		case err == nil:
			status, skip = store.StatusSkipped, store.SkipIdempotency
			reason = `idempotency key "` + spec.IdempotencyKey + `" already used by run ` + holder
		case !errors.Is(err, sql.ErrNoRows):
			return store.RunRef{}, fmt.Errorf("idempotency: %w", err)
		}
	}
	if status == store.StatusQueued && spec.RateLimitKey != "" && spec.RateLimit > 0 && spec.RateLimitPeriod > 0 {
		ok, err := t.allow(spec.RateLimitKey, spec.RateLimit, spec.RateLimitPeriod)
		if err != nil {
			return store.RunRef{}, fmt.Errorf("rate limit: %w", err)
		}
		if !ok {
			status, skip, reason = store.StatusSkipped, store.SkipRateLimit, "rate limit exceeded"
		}
	}
	if status == store.StatusQueued && spec.SingletonKey != "" {
		var other string
		err := t.queryRow(`SELECT id FROM runs WHERE singleton_key = ? AND ended_at IS NULL LIMIT 1`,
			spec.SingletonKey).Scan(&other)
		switch {
		case err == nil:
			status, skip, reason = store.StatusSkipped, store.SkipSingleton, "singleton: run "+other+" is unfinished"
		case !errors.Is(err, sql.ErrNoRows):
			return store.RunRef{}, fmt.Errorf("singleton: %w", err)
		}
	}
	debounce := status == store.StatusQueued && spec.DebounceKey != "" && spec.DebouncePeriod > 0
	if debounce {
		ref, ok, err := t.debounce(eventID, spec)
		if err != nil || ok {
			return ref, err
		}
	}

	avail := t.now
	if spec.AvailableAt.After(avail) {
		avail = spec.AvailableAt
	}
	if debounce {
		// The first event of a debounced run waits for the period too, so
		// later events can still join it.
		if at := debounceAt(t.now, t.now, spec); at.After(avail) {
			avail = at
		}
	}
	// A run whose spec asks for a lease and may start now is created
	// leased, as Claim would lease it (RunSpec.LeaseTo): Running, started
	// now, owned, its lease expiry as its available_at, its finish due.
	leased := status == store.StatusQueued && spec.LeaseNow(t.now)
	var endedAt, startedAt, availableAt, finishBy, owner any
	switch {
	case status == store.StatusSkipped:
		endedAt = now
	case leased:
		status, startedAt, owner = store.StatusRunning, now, spec.LeaseTo.Owner
		avail = t.now.Add(spec.LeaseTo.TTL)
		availableAt = avail.UnixMilli()
		if spec.FinishTimeout > 0 {
			finishBy = now + spec.FinishTimeout.Milliseconds()
		}
	default:
		availableAt = avail.UnixMilli()
	}
	// A run fed by one event names it in event_id alone: event_ids is ''
	// and it has no run_events row (0003_lean_records.sql).
	insert := `INSERT INTO runs (id, function_id, event_id, event_ids, status, created_at, started_at, ended_at,
available_at, error, idempotency_key, singleton_key, debounce_key, concurrency_key, concurrency_limit,
finish_timeout_ms, finish_by, lease_owner, lease_token) VALUES (?1, ?2, ?3, '', ?4, ?5, ?6, ?7, ?8, ?9, ?10,
?11, ?12, ?13, ?14, ?15, ?16, ?17, CASE WHEN ?17 IS NULL THEN NULL ELSE lower(hex(randomblob(16))) END)`
	args := []any{spec.ID, spec.FunctionID, eventID, string(status), now, startedAt, endedAt,
		availableAt, nullStr(reason), nullStr(spec.IdempotencyKey), nullStr(spec.SingletonKey),
		nullStr(spec.DebounceKey), nullStr(spec.ConcurrencyKey), spec.ConcurrencyLimit,
		spec.FinishTimeout.Milliseconds(), finishBy, owner}
	ref := store.RunRef{ID: spec.ID, FunctionID: spec.FunctionID, Status: status, Skip: skip}
	if leased {
		// The caller adds the trigger event to the lease.
		l := &store.Lease{RunID: spec.ID, Owner: spec.LeaseTo.Owner, Until: avail}
		var err error
		if l.Run, err = scanRun(prefixed{t.queryRow(insert+` RETURNING lease_token, `+runColumns, args...), []any{&l.Token}}); err != nil {
			return store.RunRef{}, fmt.Errorf("insert: %w", err)
		}
		ref.Lease = l
	} else if _, err := t.exec(insert, args...); err != nil {
		return store.RunRef{}, fmt.Errorf("insert: %w", err)
	}
	if status != store.StatusSkipped {
		if err := t.keepIdempotencyKey(spec, spec.ID); err != nil {
			return store.RunRef{}, err
		}
	}
	c := store.Change{Kind: store.ChangeRun, EventID: eventID, RunID: spec.ID, FunctionID: spec.FunctionID, Status: status}
	if status == store.StatusQueued {
		c.AvailableAt = avail
	}
	t.announce(c)
	return ref, nil
}

// debounce folds the event into a run with the same debounce key that is
// still queued and has never started, if there is one.
func (t *txn) debounce(eventID string, spec store.RunSpec) (store.RunRef, bool, error) {
	var (
		id, fn, first string
		created       int64
	)
	err := t.queryRow(`SELECT id, function_id, event_id, created_at FROM runs
WHERE debounce_key = ? AND status = 'Queued' AND started_at IS NULL LIMIT 1`, spec.DebounceKey).
		Scan(&id, &fn, &first, &created)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.RunRef{}, false, nil
	case err != nil:
		return store.RunRef{}, false, fmt.Errorf("debounce: %w", err)
	}
	at := debounceAt(t.now, time.UnixMilli(created), spec)
	// The run is now fed by several events: list them all, in event_ids
	// and in run_events.
	if _, err := t.exec(`UPDATE runs SET event_id = ?1,
event_ids = json_insert(COALESCE(NULLIF(event_ids, ''), json_array(event_id)), '$[#]', ?1),
available_at = ?2 WHERE id = ?3`, eventID, at.UnixMilli(), id); err != nil {
		return store.RunRef{}, false, fmt.Errorf("debounce: %w", err)
	}
	if _, err := t.exec(`INSERT INTO run_events (event_id, run_id) VALUES (?1, ?3), (?2, ?3) ON CONFLICT DO NOTHING`,
		first, eventID, id); err != nil {
		return store.RunRef{}, false, fmt.Errorf("debounce: %w", err)
	}
	if err := t.keepIdempotencyKey(spec, id); err != nil {
		return store.RunRef{}, false, err
	}
	t.announce(store.Change{Kind: store.ChangeRun, EventID: eventID, RunID: id, FunctionID: fn,
		Status: store.StatusQueued, AvailableAt: at})
	return store.RunRef{ID: id, FunctionID: fn, Status: store.StatusQueued, Existing: true, Skip: store.SkipDebounce}, true, nil
}

// debounceAt is when a debounced run created at created starts if its
// latest event arrives at now.
func debounceAt(now, created time.Time, spec store.RunSpec) time.Time {
	at := now.Add(spec.DebouncePeriod)
	if spec.DebounceMaxWait > 0 {
		if limit := created.Add(spec.DebounceMaxWait); limit.Before(at) {
			at = limit
		}
	}
	return at
}

// keepIdempotencyKey records that spec's idempotency key leads to runID.
func (t *txn) keepIdempotencyKey(spec store.RunSpec, runID string) error {
	if spec.IdempotencyKey == "" {
		return nil
	}
	if _, err := t.exec(`INSERT INTO idempotency (key, run_id, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at`,
		spec.IdempotencyKey, runID, expiry(t.now, spec.IdempotencyTTL)); err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	return nil
}

// allow is GCRA: each run moves the key's theoretical arrival time (tat)
// by period/limit; a run is allowed while tat stays within one period of
// now, which lets limit runs through in a burst and limit per period after.
func (t *txn) allow(key string, limit int, period time.Duration) (bool, error) {
	now := t.now.UnixNano()
	interval := int64(period) / int64(limit)
	var tat int64
	err := t.queryRow("SELECT tat FROM rate_limits WHERE key = ?", key).Scan(&tat)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	tat = max(tat, now) + interval
	if tat-now > int64(period) {
		return false, nil
	}
	_, err = t.exec(`INSERT INTO rate_limits (key, tat) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET tat = excluded.tat`, key, tat)
	return err == nil, err
}

// pendingWait is a waits row a new event may complete.
type pendingWait struct {
	run           int64 // runs.n
	runID, stepID string
	path          string
	value         []byte
}

// matchWaits completes the WaitForEvent steps ev satisfies and makes their
// runs claimable now (or, for a leased run, at its next Suspend).
func (t *txn) matchWaits(ev store.Event) error {
	now := t.now.UnixMilli()
	rows, err := t.query(`SELECT w.run, r.id, w.step_id, w.match_path, w.match_value FROM waits w
JOIN runs r ON r.n = w.run WHERE w.event_name = ? AND (expires_at IS NULL OR expires_at > ?)`, ev.Name, now)
	if err != nil {
		return fmt.Errorf("waits: %w", err)
	}
	var waits []pendingWait
	for rows.Next() {
		var w pendingWait
		var path, value sql.NullString
		if err := rows.Scan(&w.run, &w.runID, &w.stepID, &path, &value); err != nil {
			rows.Close()
			return fmt.Errorf("waits: %w", err)
		}
		w.path, w.value = path.String, []byte(value.String)
		waits = append(waits, w)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("waits: %w", err)
	}
	if len(waits) == 0 {
		return nil
	}

	doc, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("waits: %w", err)
	}
	for _, w := range waits {
		if w.path != "" {
			v, ok, err := keypath.Lookup(doc, w.path)
			if err != nil || !ok || !store.SameJSON(v, w.value) {
				continue
			}
		}
		if err := t.completeWait(w, doc); err != nil {
			return fmt.Errorf("wait %s/%s: %w", w.runID, w.stepID, err)
		}
	}
	return nil
}

// completeWait records ev (as JSON) as the output of the waiting step and
// wakes its run.
func (t *txn) completeWait(w pendingWait, ev []byte) error {
	now := t.now.UnixMilli()
	// status NULL is Completed (0003_lean_records.sql); the wait's end is
	// stored as its duration (0005_keyed_by_ulid.sql).
	if _, err := t.exec(`UPDATE steps SET status = NULL, output = ?1,
ended_at = CASE WHEN started_at IS NULL THEN ?2 END, duration = ?2 - started_at, wake_at = NULL
WHERE run = ?3 AND id = ?4`, string(ev), now, w.run, w.stepID); err != nil {
		return err
	}
	if _, err := t.exec(`DELETE FROM waits WHERE run = ? AND step_id = ?`, w.run, w.stepID); err != nil {
		return err
	}
	var fn string
	var leased bool
	err := t.queryRow(`SELECT function_id, lease_token IS NOT NULL AND available_at > ? FROM runs
WHERE n = ? AND ended_at IS NULL`, now, w.run).Scan(&fn, &leased)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil // the run has finished; nothing to wake
	case err != nil:
		return err
	}
	t.announce(store.Change{Kind: store.ChangeStep, RunID: w.runID, FunctionID: fn, StepID: w.stepID,
		Status: store.StatusCompleted})
	if leased {
		// The worker holding the run is most likely about to suspend it
		// until the wait's timeout; woken_at makes that Suspend wake it now.
		_, err := t.exec(`UPDATE runs SET woken_at = ? WHERE n = ?`, now, w.run)
		return err
	}
	if _, err := t.exec(`UPDATE runs SET status = 'Running', available_at = MIN(available_at, ?)
WHERE n = ?`, now, w.run); err != nil {
		return err
	}
	t.announce(store.Change{Kind: store.ChangeRun, RunID: w.runID, FunctionID: fn, Status: store.StatusRunning,
		AvailableAt: t.now})
	return nil
}
