-- Agents, their revoked certificates and the event archive.
-- Times are epoch milliseconds (INTEGER), addresses are TEXT.

CREATE TABLE agents (
    id             TEXT PRIMARY KEY,            -- OSSEC-style, '001'
    name           TEXT NOT NULL,
    registered_ip  TEXT NOT NULL DEFAULT 'any', -- address or CIDR given at `agent add`
    cert_serial    TEXT NOT NULL,               -- the certificate issued to it (lower-case hex)
    registered_at  INTEGER NOT NULL,
    removed_at     INTEGER,                     -- set by `agent remove`; the id is never reused
    first_seen     INTEGER,
    last_seen      INTEGER,
    last_address   TEXT,
    version        TEXT,
    hostname       TEXT,
    os             TEXT,
    last_sequence  INTEGER NOT NULL DEFAULT 0,  -- highest event sequence stored
    spool_depth    INTEGER NOT NULL DEFAULT 0,
    dropped_events INTEGER NOT NULL DEFAULT 0,
    read_lag_bytes INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX agents_live_name ON agents (name) WHERE removed_at IS NULL;

CREATE TABLE revoked_certificates (
    serial     TEXT PRIMARY KEY,
    agent_id   TEXT REFERENCES agents (id),
    revoked_at INTEGER NOT NULL,
    reason     TEXT NOT NULL
);

-- Every event received (OSSEC's optional `logall` archive).
CREATE TABLE archive (
    id          INTEGER PRIMARY KEY,
    agent_id    TEXT NOT NULL REFERENCES agents (id),
    sequence    INTEGER NOT NULL,
    location    TEXT NOT NULL,
    log_format  TEXT NOT NULL,
    read_at     INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    truncated   INTEGER NOT NULL DEFAULT 0,
    line        BLOB NOT NULL,
    UNIQUE (agent_id, sequence)
);
