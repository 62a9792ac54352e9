-- One-time enrollment tokens (`palisade-manager token create`).
-- Only the SHA-256 of each token is kept; the token itself is shown once.
CREATE TABLE enrollment_tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,       -- lower-case hex SHA-256 of the token
    name        TEXT,                       -- the agent name it is for, if given
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,                    -- set once, when an agent enrolls with it
    used_by     TEXT REFERENCES agents (id),
    used_from   TEXT                        -- the enrolling peer's address
);
