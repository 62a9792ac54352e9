-- Active responses in force on this agent, so that blocks are undone on
-- time also across restarts and the kernel can be reconciled with what
-- Palisade believes it installed. Times are epoch milliseconds. A row is
-- deleted when its block is undone.
CREATE TABLE active_responses (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The command name: route-null, firewall-drop, host-deny or a custom one.
    response    TEXT NOT NULL,
    -- The canonical address (IPv4-mapped IPv6 folded to IPv4).
    srcip       TEXT NOT NULL,
    user        TEXT NOT NULL DEFAULT '-',
    alert_id    TEXT NOT NULL,
    rule_id     INTEGER NOT NULL,
    -- The manager's id of the last command that added or extended it.
    command_id  TEXT NOT NULL,
    -- The location argument a custom script was given, for its delete.
    location    TEXT NOT NULL DEFAULT '',
    added_at    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- NULL: no timeout, never undone automatically.
    expires_at  INTEGER,
    -- Adds seen for this response and address (1 + extensions).
    offences    INTEGER NOT NULL DEFAULT 1,
    -- 'active', or 'undo_failed' (expires_at is then the next attempt).
    state       TEXT NOT NULL DEFAULT 'active',
    last_error  TEXT,
    UNIQUE (response, srcip)
);

CREATE INDEX active_responses_expiry ON active_responses (expires_at)
    WHERE expires_at IS NOT NULL;
