-- A reinstalled agent's new spool starts its sequence numbers again at 1:
-- the agent's spool epoch counts its spools (up by one when the manager
-- sees a new spool id), and the archive is keyed by it too, since a new
-- spool's sequence 1 is another event than the old spool's. SQLite cannot
-- change a UNIQUE constraint in place: the table is rebuilt.
ALTER TABLE agents ADD COLUMN spool_epoch INTEGER NOT NULL DEFAULT 0;

CREATE TABLE archive_new (
    id              INTEGER PRIMARY KEY,
    agent_id        TEXT NOT NULL REFERENCES agents (id),
    sequence        INTEGER NOT NULL,
    location        TEXT NOT NULL,
    log_format      TEXT NOT NULL,
    read_at         INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    truncated       INTEGER NOT NULL DEFAULT 0,
    line            BLOB NOT NULL,
    read_at_clamped INTEGER NOT NULL DEFAULT 0,
    spool_epoch     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (agent_id, spool_epoch, sequence)
);
INSERT INTO archive_new (id, agent_id, sequence, location, log_format, read_at, received_at, truncated, line, read_at_clamped)
    SELECT id, agent_id, sequence, location, log_format, read_at, received_at, truncated, line, read_at_clamped FROM archive;
DROP TABLE archive;
ALTER TABLE archive_new RENAME TO archive;
