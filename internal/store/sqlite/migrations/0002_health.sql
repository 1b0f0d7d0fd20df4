-- health holds one row that the readiness probe (Store.Ping) rewrites: a
-- write that commits shows the database still takes writes (a full disk
-- fails it, where a read would pass).
CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL -- unix milliseconds
);
