-- slowest-requests.sql
-- The 20 slowest requests of the last 24 hours.
SELECT ts, duration_ms, method, path, status, user, request_id
FROM audit
WHERE ts >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
ORDER BY duration_ms DESC
LIMIT 20;
