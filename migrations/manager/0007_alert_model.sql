-- The rest of the engine's alert model, so a stored alert reads back as
-- it was judged: the decoded ports (alerts.log prints them), the host from
-- the syslog header (alerts.log prints `host->location` when it differs)
-- and the rule's options (bits: 1 alert_by_email, 2 no_email_alert,
-- 4 log_alert, 8 no_log, 16 no_ar).
ALTER TABLE alerts ADD COLUMN srcport TEXT;
ALTER TABLE alerts ADD COLUMN dstport TEXT;
ALTER TABLE alerts ADD COLUMN hostname TEXT;
ALTER TABLE alerts ADD COLUMN options INTEGER NOT NULL DEFAULT 0;
