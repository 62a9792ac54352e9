-- Active responses: every command decided for an agent (by a rule or an
-- operator), its delivery and result, and for blocks when they end.
CREATE TABLE responses (
    id          INTEGER PRIMARY KEY,             -- also the command id sent to the agent
    agent_id    TEXT NOT NULL REFERENCES agents (id),
    response    TEXT NOT NULL,                   -- OSSEC's name, e.g. route-null600
    command     TEXT NOT NULL,                   -- the command name
    executable  TEXT NOT NULL,                   -- built-in name or script path
    action      TEXT NOT NULL,                   -- add | delete
    srcip       TEXT,
    user        TEXT,
    alert_id    INTEGER REFERENCES alerts (id),  -- NULL when run by an operator
    rule_id     INTEGER,
    location    TEXT,
    timeout_s   INTEGER,                         -- NULL: never undone
    issued_at   INTEGER NOT NULL,
    sent_at     INTEGER,
    executed_at INTEGER,
    expires_at  INTEGER,                         -- adds with a timeout
    undone_at   INTEGER,                         -- adds: when the block ended
    undoes      INTEGER REFERENCES responses (id), -- deletes: the add they lift
    status      TEXT NOT NULL,                   -- pending | sent | done | failed | superseded | expired
    message     TEXT
);

CREATE INDEX responses_by_agent_status ON responses (agent_id, status);
CREATE INDEX responses_by_srcip ON responses (srcip, action, undone_at);
CREATE INDEX responses_by_alert ON responses (alert_id);

-- Decisions not taken: white-listed, the manager's own or an unparsable
-- address, a missing field. Kept so operators can see why nothing happened.
CREATE TABLE response_refusals (
    id        INTEGER PRIMARY KEY,
    time      INTEGER NOT NULL,
    response  TEXT NOT NULL,
    agent_id  TEXT,
    alert_id  INTEGER REFERENCES alerts (id),
    rule_id   INTEGER,
    srcip     TEXT,
    reason    TEXT NOT NULL
);
