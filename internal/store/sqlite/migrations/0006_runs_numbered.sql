-- Runs get a row number again, and steps and waits refer to their run by it
-- (issue #14: no regression with a long history, a stored view under 1 KB).
--
-- 1. 0005 made runs a WITHOUT ROWID table. Such a table is a b-tree of
--    whole rows, interior pages included, and a run is about 225 bytes:
--    more than SQLite's guide of a twentieth of a page. With 500 000 stored
--    runs, claims and finishes (which rewrite the row) made the burn-down a
--    tenth slower than on schema 4 (docs/BENCHMARKS.md). runs is a rowid
--    table again, whose interior cells are a few bytes, with the rowid
--    declared as n (INTEGER PRIMARY KEY) so that VACUUM keeps it. The id
--    is kept a second time, in the unique index that finds a run by id.
-- 2. That costs 39 bytes a run and wins back more: a step, and a wait,
--    refers to its run by n (1 to 4 bytes) where it kept the 26-byte id.
--    A page view has three steps.
-- 3. events stay keyed by their id: an event is written once and never
--    rewritten.
--
-- migrate runs this with foreign keys off and checks them before it
-- commits (see 0005).
CREATE TABLE waits_keep AS SELECT * FROM waits;
DROP TABLE waits;

CREATE TABLE runs_numbered (
    n                 INTEGER PRIMARY KEY, -- the rowid; what steps and waits refer to
    id                TEXT NOT NULL UNIQUE, -- ULID chosen by the engine
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
);
INSERT INTO runs_numbered (id, function_id, event_id, event_ids, status, attempt, created_at,
    started_at, ended_at, available_at, output, error, idempotency_key, singleton_key, debounce_key,
    concurrency_key, concurrency_limit, finish_timeout_ms, finish_by, lease_owner, lease_token, woken_at)
SELECT id, function_id, event_id, event_ids, status, attempt, created_at,
    started_at, ended_at, available_at, output, error, idempotency_key, singleton_key, debounce_key,
    concurrency_key, concurrency_limit, finish_timeout_ms, finish_by, lease_owner, lease_token, woken_at
FROM runs ORDER BY id;

CREATE TABLE steps_numbered (
    run        INTEGER NOT NULL REFERENCES runs (n) ON DELETE CASCADE,
    id         TEXT NOT NULL,            -- "name", "name:1", ...
    seq        INTEGER NOT NULL,         -- 0, 1, ... in the order first recorded
    name       TEXT,                     -- NULL: the same as id
    kind       TEXT,                     -- sleep, sendEvent, waitForEvent; NULL: run
    status     TEXT,                     -- Running, Sleeping, Waiting, Failed; NULL: Completed
    attempts   TEXT,                     -- NULL: one attempt, started_at to its end (0003)
    output     TEXT,                     -- JSON
    error      TEXT,
    wake_at    INTEGER,
    started_at INTEGER,
    ended_at   INTEGER,                  -- NULL when duration holds the end (0005)
    wait       TEXT,                     -- JSON {event, match_path, match_value}
    duration   INTEGER,                  -- ms from started_at to the end; NULL: see ended_at
    PRIMARY KEY (run, id)
) WITHOUT ROWID;
INSERT INTO steps_numbered (run, id, seq, name, kind, status, attempts, output, error, wake_at,
    started_at, ended_at, wait, duration)
SELECT r.n, s.id, s.seq, s.name, s.kind, s.status, s.attempts, s.output, s.error, s.wake_at,
    s.started_at, s.ended_at, s.wait, s.duration
FROM steps s JOIN runs_numbered r ON r.id = s.run_id;

DROP TABLE steps;
DROP TABLE runs;
ALTER TABLE runs_numbered RENAME TO runs;
ALTER TABLE steps_numbered RENAME TO steps;

CREATE TABLE waits (
    run         INTEGER NOT NULL,        -- runs.n
    step_id     TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    match_path  TEXT,                    -- dotted path into the event; NULL: any event
    match_value TEXT,                    -- compact JSON the value at match_path must equal
    expires_at  INTEGER,                 -- the step's timeout; NULL: never
    PRIMARY KEY (run, step_id),
    FOREIGN KEY (run, step_id) REFERENCES steps (run, id) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO waits (run, step_id, event_name, match_path, match_value, expires_at)
SELECT r.n, w.step_id, w.event_name, w.match_path, w.match_value, w.expires_at
FROM waits_keep w JOIN runs r ON r.id = w.run_id;
DROP TABLE waits_keep;
CREATE INDEX waits_event ON waits (event_name);

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
