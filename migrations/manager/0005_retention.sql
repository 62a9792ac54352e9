-- Retention (pruning old alerts): deleting an alert makes SQLite look for
-- refusals that still point at it; without this index every deleted alert
-- would scan the whole refusals table.
CREATE INDEX response_refusals_by_alert ON response_refusals (alert_id);
