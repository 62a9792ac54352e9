-- The archive as one row per stored batch, its events packed in one blob
-- (the layout: manager/src/store/archive.rs): a row per event cost more
-- than the rest of a batch commit. The rows of one batch share their
-- agent, spool epoch and arrival time; they are packed in sequence order,
-- every event with its own location and format (the manager's writer
-- omits repeated ones; its reader takes both). Integers are big-endian
-- hex here, as printf writes them. The archive's size is counted again:
-- each batch's blob plus 64 bytes (store::ARCHIVE_BATCH_OVERHEAD).
CREATE TABLE archive_batches (
    id             INTEGER PRIMARY KEY,
    agent_id       TEXT NOT NULL REFERENCES agents (id),
    spool_epoch    INTEGER NOT NULL,
    first_sequence INTEGER NOT NULL,
    last_sequence  INTEGER NOT NULL,
    events         INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    batch          BLOB NOT NULL,
    UNIQUE (agent_id, spool_epoch, first_sequence)
);
INSERT INTO archive_batches (agent_id, spool_epoch, first_sequence, last_sequence, events, received_at, batch)
    SELECT agent_id, spool_epoch, MIN(sequence), MAX(sequence), COUNT(*), received_at,
           unhex('01' || group_concat(
               printf('%016x%016x%02x%08x', sequence, read_at,
                      (truncated <> 0) + 2 * (read_at_clamped <> 0), length(CAST(location AS BLOB)))
               || hex(location)
               || printf('%08x', length(CAST(log_format AS BLOB))) || hex(log_format)
               || printf('%08x', length(CAST(line AS BLOB))) || hex(line),
               '' ORDER BY sequence))
    FROM archive
    GROUP BY agent_id, spool_epoch, received_at
    ORDER BY MIN(id);
DROP TABLE archive;
ALTER TABLE archive_batches RENAME TO archive;
UPDATE archive_size SET bytes = (SELECT COALESCE(SUM(LENGTH(batch) + 64), 0) FROM archive) WHERE id = 1;
