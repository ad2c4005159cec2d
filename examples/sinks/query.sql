-- The trail, newest first: who did what, and the outcome.
SELECT "timestamp", actor, action, event->>'outcome' AS outcome, entry_id
FROM audit_events
ORDER BY "timestamp" DESC
LIMIT 20;

-- Each stream entry once: a retried entry never adds a row.
SELECT count(*) AS rows, count(DISTINCT event_id) AS events, count(DISTINCT entry_id) AS entries
FROM audit_events;
