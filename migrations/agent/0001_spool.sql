-- The agent's durable state: events not yet acknowledged by the manager and
-- the read position of every tailed file. Times are epoch milliseconds.

-- AUTOINCREMENT: sequence numbers are never reused, also after the rows
-- are deleted on acknowledgement and across restarts.
CREATE TABLE spool (
    sequence   INTEGER PRIMARY KEY AUTOINCREMENT,
    location   TEXT NOT NULL,
    log_format TEXT NOT NULL,
    read_at    INTEGER NOT NULL,
    truncated  INTEGER NOT NULL DEFAULT 0,
    line       BLOB NOT NULL
);

-- Read position per file, advanced in the same transaction as the events
-- read up to it.
CREATE TABLE checkpoints (
    path       TEXT PRIMARY KEY,
    device     INTEGER NOT NULL,
    inode      INTEGER NOT NULL,
    offset     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Small counters that survive restarts (dropped events, ...).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
