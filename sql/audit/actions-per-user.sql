-- actions-per-user.sql
-- Actions per user and kind over the last 7 days (failed logins under the name tried).
SELECT COALESCE(user, '-') AS user, action, COUNT(*) AS requests,
       SUM(status >= 400) AS errors, ROUND(AVG(duration_ms), 1) AS avg_ms
FROM audit
WHERE ts >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days')
GROUP BY user, action
ORDER BY user, requests DESC;
