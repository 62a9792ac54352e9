-- The spool stores what the tailer read as chunks: one row per run of
-- consecutive sequence numbers (a blob of framed events, see
-- agent/src/spool.rs) instead of one row per line, so that a line costs
-- SQLite a share of one insert, one read and one delete.
CREATE TABLE spool_chunks (
    -- Sequence of the chunk's first event; the others follow it, one each.
    first_sequence INTEGER PRIMARY KEY,
    events         INTEGER NOT NULL,
    data           BLOB NOT NULL
);

-- The next sequence number to hand out (never reused: it only grows, in
-- the transaction that stores the events), and the highest the manager
-- acknowledged (a chunk may be acknowledged in part).
CREATE TABLE spool_cursor (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    next_sequence INTEGER NOT NULL,
    acknowledged  INTEGER NOT NULL
);

-- Carries the per-line spool's numbering over: AUTOINCREMENT's high-water
-- mark, and everything before its oldest row as acknowledged. Its rows are
-- moved into chunks when the spool is opened (Spool::open_with).
INSERT INTO spool_cursor (id, next_sequence, acknowledged)
    SELECT 1,
           COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'spool'), 0) + 1,
           COALESCE((SELECT MIN(sequence) FROM spool) - 1,
                    (SELECT seq FROM sqlite_sequence WHERE name = 'spool'), 0);
