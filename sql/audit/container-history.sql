-- container-history.sql
-- Everything that happened to one container (sqlite3 -cmd ".param set :cuid c…").
SELECT ts, user, remote_addr, method, path, action, status, error_code, duration_ms, request_id, job_id
FROM audit
WHERE cuid = :cuid
ORDER BY ts;
