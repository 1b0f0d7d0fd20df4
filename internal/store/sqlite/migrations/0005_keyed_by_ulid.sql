-- Events and runs keyed by their ULID (issue #14: a stored page view under
-- 1 KB).
--
-- 1. events and runs become WITHOUT ROWID tables: the id is the table's own
--    key, where a rowid table kept it twice (in the row and in the unique
--    index sqlite_autoindex_*_1, 39 bytes a row each). An index of them
--    holds the id instead of a rowid.
-- 2. events_received and runs_ended go (16 bytes a row each). Prune walks
--    the primary key instead: an id is a ULID made when the event arrived or
--    the run was created, so an event received before a cutoff, or a run
--    that ended before it, has an id below the cutoff's ULID prefix. Prune
--    asks for both, so an id from a skewed clock keeps its row longer but
--    never drops it early.
-- 3. events.ts becomes ts_lag, received_at minus the event's ts: an event
--    sent without a ts has the time of its receipt, a lag of a few
--    milliseconds or none, which takes 0 or 1 byte where a time took 6.
-- 4. A step that started and ended stores its duration, ended_at minus
--    started_at, and NULL for ended_at: 0 to 2 bytes for the usual step
--    where its end took 6. A step with no start keeps its end in ended_at,
--    and so do the rows written before.
--
-- migrate runs this with foreign keys off (SQLite's procedure for changing
-- a table's shape), so dropping the old runs table deletes no step, and
-- checks every foreign key before it commits.
CREATE TABLE events_keyed (
    id          TEXT PRIMARY KEY,        -- ULID
    client_id   TEXT,                    -- the client's "id" (idempotency), if any
    name        TEXT NOT NULL,
    data        TEXT,                    -- JSON
    user        TEXT,                    -- JSON
    ts_lag      INTEGER NOT NULL,        -- received_at minus the event's own "ts" (ms)
    version     TEXT,                    -- the event's "v"
    received_at INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO events_keyed (id, client_id, name, data, user, ts_lag, version, received_at)
SELECT id, client_id, name, data, user, received_at - ts, version, received_at FROM events;
DROP TABLE events;
ALTER TABLE events_keyed RENAME TO events;
CREATE INDEX events_name ON events (name, id);

CREATE TABLE runs_keyed (
    id                TEXT PRIMARY KEY,  -- ULID chosen by the engine
    function_id       TEXT NOT NULL,
    event_id          TEXT NOT NULL,     -- the latest trigger event
    event_ids         TEXT NOT NULL,     -- '' (one event: event_id) or a JSON array of them, oldest first
    status            TEXT NOT NULL,     -- Queued, Running, Sleeping, Completed, Failed, Cancelled, Skipped
    attempt           INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    ended_at          INTEGER,
    available_at      INTEGER,           -- when it can next be claimed; NULL once finished
    output            TEXT,              -- JSON
    error             TEXT,
    idempotency_key   TEXT,
    singleton_key     TEXT,
    debounce_key      TEXT,
    concurrency_key   TEXT,
    concurrency_limit INTEGER NOT NULL DEFAULT 0,
    finish_timeout_ms INTEGER NOT NULL DEFAULT 0,
    finish_by         INTEGER,
    lease_owner       TEXT,
    lease_token       TEXT,
    -- A WaitForEvent of this run matched while it was leased: the next
    -- Suspend makes it claimable no later than this.
    woken_at          INTEGER
) WITHOUT ROWID;
INSERT INTO runs_keyed SELECT id, function_id, event_id, event_ids, status, attempt, created_at,
    started_at, ended_at, available_at, output, error, idempotency_key, singleton_key, debounce_key,
    concurrency_key, concurrency_limit, finish_timeout_ms, finish_by, lease_owner, lease_token, woken_at
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_keyed RENAME TO runs;
CREATE INDEX runs_available ON runs (available_at) WHERE available_at IS NOT NULL;
CREATE INDEX runs_function ON runs (function_id, id);
CREATE INDEX runs_event ON runs (event_id);
CREATE INDEX runs_singleton ON runs (singleton_key)
    WHERE singleton_key IS NOT NULL AND ended_at IS NULL;
CREATE INDEX runs_debounce ON runs (debounce_key)
    WHERE debounce_key IS NOT NULL AND status = 'Queued' AND started_at IS NULL;
CREATE INDEX runs_leased ON runs (concurrency_key, available_at)
    WHERE lease_token IS NOT NULL AND concurrency_key IS NOT NULL;
CREATE INDEX runs_unfinished_status ON runs (status, id) WHERE status <> 'Completed';
CREATE INDEX runs_unfinished_function_status ON runs (function_id, status, id) WHERE status <> 'Completed';

ALTER TABLE steps ADD COLUMN duration INTEGER;  -- ms from started_at to the end; NULL: see ended_at
