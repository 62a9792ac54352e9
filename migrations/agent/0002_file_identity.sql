-- Read positions keyed by the file itself (device and inode) instead of
-- its path, so a file keeps its position when it is renamed by a rotation
-- and can be found again under its new name after a restart. The
-- fingerprint (a checksum of the first `fingerprint_len` bytes) tells a
-- reused inode from the file that had it. `location` is the configured
-- path the file's lines are reported under; `live` is 1 while the file is
-- still at that path, 0 once it was rotated away or deleted.
CREATE TABLE file_checkpoints (
    device          INTEGER NOT NULL,
    inode           INTEGER NOT NULL,
    fingerprint_len INTEGER NOT NULL,
    fingerprint     INTEGER NOT NULL,
    offset          INTEGER NOT NULL,
    skipping        INTEGER NOT NULL DEFAULT 0,
    location        TEXT NOT NULL,
    live            INTEGER NOT NULL DEFAULT 1,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (device, inode)
);

-- Positions from 0001 carry over with an unknown fingerprint (length 0
-- matches any file); the next write records the real one.
INSERT INTO file_checkpoints (device, inode, fingerprint_len, fingerprint, offset, skipping, location, live, updated_at)
    SELECT device, inode, 0, 0, offset, 0, path, 1, updated_at FROM checkpoints WHERE true
    ON CONFLICT DO NOTHING;

DROP TABLE checkpoints;
