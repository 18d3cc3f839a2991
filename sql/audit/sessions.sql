-- sessions.sql: terminal and log-stream sessions of the last 24 hours, newest first: who ran
-- what in which container, for how long, bytes each way and the exit code.
SELECT ts, user, remote_addr, cuid, action, command, exit_code,
       round(duration_ms / 1000.0, 1) AS seconds, bytes_in, bytes_out, status, error_code
FROM audit
WHERE action IN ('ws.exec', 'ws.logs', 'logs') AND ts >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
ORDER BY id DESC
LIMIT 200;
