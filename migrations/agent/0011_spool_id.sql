-- Names this spool, once, when it is created: the agent sends it in its
-- Hello, so that a manager that stored events of an earlier spool of the
-- same agent (a reinstall, a deleted spool) knows the sequence numbers
-- start again at 1 and accepts them, instead of taking them for events it
-- already has.
CREATE TABLE spool_identity (
    id TEXT NOT NULL
);
INSERT INTO spool_identity (id) VALUES (lower(hex(randomblob(16))));
