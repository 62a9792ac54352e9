-- A fleet of thousands of agents (#15 item 4).
-- The revocation generation: counted up by every revocation (a removed
-- agent, a revoked certificate, a removed operator), by this daemon or by
-- `agent remove`/`operator remove` in another process. The running manager
-- reads this one row every second and reloads the revoked identities only
-- when it changed, instead of reading every agent row. (Removing an
-- operator, or switching an agent to its renewed certificate, revokes a
-- certificate: the first trigger counts those.)
CREATE TABLE revocation_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO revocation_generation (id, generation) VALUES (1, 0);

CREATE TRIGGER revocation_on_revoked_certificate AFTER INSERT ON revoked_certificates
BEGIN
    UPDATE revocation_generation SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER revocation_on_removed_agent AFTER UPDATE OF removed_at ON agents
WHEN NEW.removed_at IS NOT NULL
BEGIN
    UPDATE revocation_generation SET generation = generation + 1 WHERE id = 1;
END;
