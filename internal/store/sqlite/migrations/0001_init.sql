-- cyberdrew embedded store, schema version 1.
--
-- Conventions:
--   * Times are INTEGER unix milliseconds (UTC); NULL means "not set".
--   * JSON documents are TEXT.
--   * Flow-control keys are NULL when a run has none, so the partial indexes
--     below only hold the runs that use them.

-- Events accepted at intake, as Inngest sends them plus the ULID the server
-- gave them.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,        -- ULID
    client_id   TEXT,                    -- the client's "id" (idempotency), if any
    name        TEXT NOT NULL,
    data        TEXT,                    -- JSON
    user        TEXT,                    -- JSON
    ts          INTEGER NOT NULL,        -- the event's own "ts" (ms)
    version     TEXT,                    -- the event's "v"
    received_at INTEGER NOT NULL
);
CREATE INDEX events_name ON events (name, id);
CREATE INDEX events_received ON events (received_at);

-- Client ids seen recently: a second event with a live client id is a
-- duplicate and answers event_id.
CREATE TABLE event_client_ids (
    client_id  TEXT PRIMARY KEY,
    event_id   TEXT NOT NULL,
    expires_at INTEGER                   -- NULL: never
) WITHOUT ROWID;
CREATE INDEX event_client_ids_expires ON event_client_ids (expires_at) WHERE expires_at IS NOT NULL;

-- Runs: one execution of a function.
--
-- available_at drives the queue: it is when the run can next be claimed,
-- NULL once the run is finished. While a worker holds the lease
-- (lease_token set), available_at is the lease expiry, so a lapsed lease
-- makes the run claimable again through the same index.
CREATE TABLE runs (
    id                TEXT PRIMARY KEY,  -- ULID chosen by the engine
    function_id       TEXT NOT NULL,
    event_id          TEXT NOT NULL,     -- the latest trigger event
    event_ids         TEXT NOT NULL,     -- JSON array of every trigger event, oldest first
    status            TEXT NOT NULL,     -- Queued, Running, Sleeping, Completed, Failed, Cancelled, Skipped
    attempt           INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    ended_at          INTEGER,
    available_at      INTEGER,
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
CREATE INDEX runs_available ON runs (available_at) WHERE available_at IS NOT NULL;
CREATE INDEX runs_function ON runs (function_id, id);
CREATE INDEX runs_ended ON runs (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX runs_singleton ON runs (singleton_key)
    WHERE singleton_key IS NOT NULL AND ended_at IS NULL;
CREATE INDEX runs_debounce ON runs (debounce_key)
    WHERE debounce_key IS NOT NULL AND status = 'Queued' AND started_at IS NULL;
CREATE INDEX runs_leased ON runs (concurrency_key, available_at)
    WHERE lease_token IS NOT NULL AND concurrency_key IS NOT NULL;

-- Which events fed which runs (a debounced run has several).
CREATE TABLE run_events (
    event_id TEXT NOT NULL,
    run_id   TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    PRIMARY KEY (event_id, run_id)
) WITHOUT ROWID;
CREATE INDEX run_events_run ON run_events (run_id);

-- Steps of a run, in the order they were first recorded (rowid).
CREATE TABLE steps (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,            -- "name", "name:1", ...
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,            -- run, sleep, sendEvent, waitForEvent
    status     TEXT NOT NULL,
    attempts   TEXT NOT NULL,            -- JSON array of {started_at, ended_at, error}
    output     TEXT,                     -- JSON
    error      TEXT,
    wake_at    INTEGER,
    started_at INTEGER,
    ended_at   INTEGER,
    wait       TEXT,                     -- JSON {event, match_path, match_value}
    PRIMARY KEY (run_id, id)
);

-- Pending WaitForEvent steps, found by the name of the event they wait for.
CREATE TABLE waits (
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    match_path  TEXT,                    -- dotted path into the event; NULL: any event
    match_value TEXT,                    -- compact JSON the value at match_path must equal
    expires_at  INTEGER,                 -- the step's timeout; NULL: never
    PRIMARY KEY (run_id, step_id),
    FOREIGN KEY (run_id, step_id) REFERENCES steps (run_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX waits_event ON waits (event_name);

-- Idempotency keys: at most one run per key while the key lives.
CREATE TABLE idempotency (
    key        TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    expires_at INTEGER                   -- NULL: never
) WITHOUT ROWID;
CREATE INDEX idempotency_run ON idempotency (run_id);
CREATE INDEX idempotency_expires ON idempotency (expires_at) WHERE expires_at IS NOT NULL;

-- Rate limits (GCRA): the theoretical arrival time of the next run per key.
-- tat is in unix NANOseconds, because period/limit is often not a whole
-- number of milliseconds.
CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
) WITHOUT ROWID;

-- Key-value data of the site jobs, with Redis semantics: one key space
-- holding strings (value) and sets (members in kv_sets).
CREATE TABLE kv (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('string', 'set')),
    value      TEXT,                     -- strings only
    expires_at INTEGER                   -- NULL: never
) WITHOUT ROWID;
CREATE INDEX kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE kv_sets (
    key    TEXT NOT NULL REFERENCES kv (key) ON DELETE CASCADE,
    member TEXT NOT NULL,
    PRIMARY KEY (key, member)
) WITHOUT ROWID;
