-- The agent's spool id, from its Hello: a new one (a reinstalled agent, a
-- deleted spool) restarts the agent's sequence numbers at 1, and the
-- manager resets last_sequence instead of dropping the new events as
-- already stored.
ALTER TABLE agents ADD COLUMN spool_id TEXT;

-- An archived event whose read_at lay outside the sane range (a year
-- before arrival to a day after) holds the arrival time instead, flagged.
ALTER TABLE archive ADD COLUMN read_at_clamped INTEGER NOT NULL DEFAULT 0;
