-- Lean records (issue #14): the same facts in fewer bytes per run.
--
-- 1. A run fed by one event names it in runs.event_id alone: its event_ids
--    is '' (the column is NOT NULL) and it has no run_events row. runs_event finds the runs of an
--    event. run_events keeps every event of a run fed by several (a
--    debounced run), and event_ids lists them, oldest first.
CREATE INDEX runs_event ON runs (event_id);
UPDATE runs SET event_ids = ''
WHERE json_array_length(event_ids) = 1 AND event_ids ->> 0 = event_id;
DELETE FROM run_events
WHERE run_id IN (SELECT id FROM runs WHERE event_ids = '');

-- 2. Steps are keyed by (run_id, id) without a rowid, so the key is stored
--    once and not again in an index; seq keeps the order in which a run's
--    steps were first recorded. name is NULL when it equals id, kind NULL
--    for 'run' and status NULL for 'Completed', the usual step. attempts is
--    NULL for the usual step, Completed after one attempt without error that
--    ran from started_at to ended_at; otherwise a JSON array with one array
--    per attempt: [started_at, ended_at] or [started_at, ended_at, "error"],
--    in unix milliseconds (null: not set). Rows copied from version 2 keep
--    their attempts as they were written then, an array of objects
--    {started_at, ended_at, error} with RFC 3339 times; both forms are read.
--
-- waits refers to steps, so it is set aside while steps is rebuilt (dropping
-- steps with waits in place would delete the waits through their foreign
-- key).
CREATE TABLE waits_keep AS SELECT * FROM waits;
DROP TABLE waits;

CREATE TABLE steps_lean (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,            -- "name", "name:1", ...
    seq        INTEGER NOT NULL,         -- 0, 1, ... in the order first recorded
    name       TEXT,                     -- NULL: the same as id
    kind       TEXT,                     -- sleep, sendEvent, waitForEvent; NULL: run
    status     TEXT,                     -- Running, Sleeping, Waiting, Failed; NULL: Completed
    attempts   TEXT,                     -- NULL: one attempt, started_at to ended_at (see above)
    output     TEXT,                     -- JSON
    error      TEXT,
    wake_at    INTEGER,
    started_at INTEGER,
    ended_at   INTEGER,
    wait       TEXT,                     -- JSON {event, match_path, match_value}
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
INSERT INTO steps_lean (run_id, id, seq, name, kind, status, attempts, output, error, wake_at,
    started_at, ended_at, wait)
SELECT run_id, id, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY rowid) - 1, NULLIF(name, id),
    NULLIF(kind, 'run'), NULLIF(status, 'Completed'), attempts, output, error, wake_at, started_at, ended_at, wait
FROM steps;
DROP TABLE steps;
ALTER TABLE steps_lean RENAME TO steps;

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
INSERT INTO waits (run_id, step_id, event_name, match_path, match_value, expires_at)
SELECT run_id, step_id, event_name, match_path, match_value, expires_at FROM waits_keep;
DROP TABLE waits_keep;
CREATE INDEX waits_event ON waits (event_name);

