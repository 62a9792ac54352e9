-- Alerts: every rule match with a level above 0 that was not suppressed.
CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY,
    time           INTEGER NOT NULL,             -- when the manager judged it (ms)
    rule_id        INTEGER NOT NULL,
    level          INTEGER NOT NULL,
    description    TEXT NOT NULL,
    groups         TEXT NOT NULL,                -- comma-separated, as OSSEC prints them
    agent_id       TEXT REFERENCES agents (id),  -- NULL for the manager's own events
    location       TEXT NOT NULL,
    decoder        TEXT,
    srcip          TEXT,
    dstip          TEXT,
    srcuser        TEXT,
    dstuser        TEXT,
    url            TEXT,
    event_sequence INTEGER,                      -- the agent's sequence number of the event
    log            BLOB NOT NULL                 -- the line, then the correlated lines, newline-separated
);

CREATE INDEX alerts_by_time ON alerts (time);
CREATE INDEX alerts_by_rule ON alerts (rule_id, time);
CREATE INDEX alerts_by_level ON alerts (level, time);
CREATE INDEX alerts_by_agent ON alerts (agent_id, time);
CREATE INDEX alerts_by_srcip ON alerts (srcip, time);
