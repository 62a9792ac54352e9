-- Several managers on one database (#16 item 4): a revocation (an agent
-- removed, a certificate revoked) wakes every manager at once with a
-- NOTIFY on commit, whichever process wrote it (also `agent remove` from
-- another host's command line); the managers' one-second poll of
-- revocation_generation stays as the safety net. PostgreSQL only: SQLite
-- has one manager, which polls (no SQLite twin needed: no table or column
-- changes).
CREATE OR REPLACE FUNCTION palisade_revocation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revocation_generation SET generation = generation + 1 WHERE id = 1;
    PERFORM pg_notify('palisade_revocations', '');
    RETURN NULL;
END;
$$;
