-- Runs that did not complete (queued, running, sleeping, failed, cancelled,
-- skipped) are few next to the completed ones, yet a listing by one of those
-- statuses walked every newer run to fill a page: 52 ms at the bench's
-- history row, unbounded in general. They are indexed apart, by status and
-- by function and status, without the completed runs, so a completed run
-- (the site's page view) costs no byte more. A listing by one status other
-- than Completed names the indexes' condition (runsQuery), as SQLite uses a
-- partial index only for a query that says it.
CREATE INDEX runs_unfinished_status ON runs (status, id) WHERE status <> 'Completed';
CREATE INDEX runs_unfinished_function_status ON runs (function_id, status, id) WHERE status <> 'Completed';
