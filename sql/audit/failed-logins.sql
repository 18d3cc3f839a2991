-- failed-logins.sql
-- Failed logins per remote address over the last 24 hours, most first.
SELECT remote_addr, COUNT(*) AS failures, MIN(ts) AS first_seen, MAX(ts) AS last_seen,
       GROUP_CONCAT(DISTINCT user) AS users_tried
FROM audit
WHERE status = 401 AND ts >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
GROUP BY remote_addr
ORDER BY failures DESC;
