-- When each agent process last started, from its Hello (epoch ms). A
-- restart (`palisadectl -R`) shows as a newer time.
ALTER TABLE agents ADD COLUMN started_at INTEGER;
