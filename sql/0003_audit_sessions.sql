-- 0003: audit rows for long-lived sessions (WebSocket terminals and log streams): the command
-- run, bytes from the client (stdin) and to it (stdout/stderr), and the process's exit code.
ALTER TABLE audit ADD COLUMN command TEXT;
ALTER TABLE audit ADD COLUMN bytes_in INTEGER;
ALTER TABLE audit ADD COLUMN bytes_out INTEGER;
ALTER TABLE audit ADD COLUMN exit_code INTEGER;
