-- Identities have a life cycle (#15).
-- An agent's renewed certificate, issued over its stream and not used yet:
-- the first stream opened with it makes it the agent's certificate and
-- revokes the one before.
ALTER TABLE agents ADD COLUMN pending_serial TEXT;
-- The last time a stream of this agent's certificate was refused, and why
-- (wrong address, a second live stream), so operators see it.
ALTER TABLE agents ADD COLUMN last_refused_at INTEGER;
ALTER TABLE agents ADD COLUMN last_refusal TEXT;

-- Operators (`palisade-manager operator add/remove/list`): only a
-- registered, live operator's certificate may call the control API.
CREATE TABLE operators (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    cert_serial   TEXT NOT NULL UNIQUE,   -- lower-case hex, as agents'
    registered_at INTEGER NOT NULL,
    removed_at    INTEGER                 -- its serial is then in revoked_certificates
);

CREATE UNIQUE INDEX operators_live_name ON operators (name) WHERE removed_at IS NULL;
