-- The active-response circuit breaker, per agent: when more new blocks
-- than the limit were issued there in one minute, new blocks stop until an
-- operator resets it (`palisadectl breaker reset ID`). Kept here so a
-- restart of the manager keeps a tripped breaker tripped.
CREATE TABLE circuit_breakers (
    agent_id   TEXT PRIMARY KEY REFERENCES agents (id),
    tripped_at INTEGER,          -- NULL: closed (new blocks allowed)
    new_blocks INTEGER,          -- distinct addresses blocked in the minute before it tripped
    max_per_minute INTEGER,      -- the limit in force then
    reset_at   INTEGER           -- the last reset; blocks before it are not counted again
);
