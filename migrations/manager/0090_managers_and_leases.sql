-- Several managers on one database (#16 item 2).
-- Each manager process has a row, found again by its name when it
-- restarts; it refreshes heartbeat_at every few seconds, and one whose
-- heartbeat is older than `[manager] dead_after` is dead. The counts are
-- the events and alerts it took in over its last minute, written with the
-- heartbeat, for `palisadectl status`.
CREATE TABLE managers (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    address           TEXT NOT NULL,
    version           TEXT NOT NULL,
    started_at        INTEGER NOT NULL,
    heartbeat_at      INTEGER NOT NULL,
    stopped_at        INTEGER,           -- a clean shutdown; NULL while it runs
    events_last_minute INTEGER NOT NULL DEFAULT 0,
    alerts_last_minute INTEGER NOT NULL DEFAULT 0
);

-- An agent's lease: the manager holding its one live stream in the whole
-- cluster (NULL: none), and a fencing generation counted up by every
-- stream that takes it. A batch is stored only while the stream's
-- generation is still the agent's, so a manager that lost the lease cannot
-- store that agent's events any more.
ALTER TABLE agents ADD COLUMN lease_manager INTEGER;
ALTER TABLE agents ADD COLUMN lease_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN lease_granted_at INTEGER;
