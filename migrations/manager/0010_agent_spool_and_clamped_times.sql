-- The agent's spool id, from its Hello: a new one (a reinstalled agent, a
-- deleted spool) restarts the agent's sequence numbers at 1, and the
-- manager resets last_sequence and counts a new spool epoch instead of
-- dropping the new events as already stored.
ALTER TABLE agents ADD COLUMN spool_id TEXT;
ALTER TABLE agents ADD COLUMN spool_epoch INTEGER NOT NULL DEFAULT 0;

-- The archive is keyed by the agent's spool epoch too (a new spool's
-- sequence 1 is another event than the old spool's), and an event whose
-- read_at lay outside the sane range (a year before arrival to a day
-- after) holds the arrival time instead, flagged. SQLite cannot change a
-- UNIQUE constraint in place: the table is rebuilt.
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
    spool_epoch     INTEGER NOT NULL DEFAULT 0,
    read_at_clamped INTEGER NOT NULL DEFAULT 0,
    UNIQUE (agent_id, spool_epoch, sequence)
);
INSERT INTO archive_new (id, agent_id, sequence, location, log_format, read_at, received_at, truncated, line)
    SELECT id, agent_id, sequence, location, log_format, read_at, received_at, truncated, line FROM archive;
DROP TABLE archive;
ALTER TABLE archive_new RENAME TO archive;
