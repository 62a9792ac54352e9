-- The archive's size, kept with every insert and prune, so that
-- [retention] archive_max_size is checked without reading the archive.
-- A row counts its line, location and format plus a fixed overhead for
-- the other columns and the b-tree (store::ARCHIVE_ROW_OVERHEAD).
CREATE TABLE archive_size (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    bytes INTEGER NOT NULL
);
INSERT INTO archive_size (id, bytes)
    SELECT 1, COALESCE(SUM(LENGTH(line) + LENGTH(location) + LENGTH(log_format) + 48), 0)
    FROM archive;
