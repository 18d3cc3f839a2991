-- errors.sql
-- Error responses of the last 24 hours by code.
SELECT error_code, status, COUNT(*) AS n, MAX(ts) AS last_seen
FROM audit
WHERE status >= 400 AND ts >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
GROUP BY error_code, status
ORDER BY n DESC;
