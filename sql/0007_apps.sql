-- 0007: apps: containers built from source (or an image), health-checked and reverse-proxied
-- at /apps/{name}/. One row per app; the proxy reads docker_id/host_port/status per request,
-- so a rebuild swaps the route by updating the row once the new container is healthy.
CREATE TABLE apps (
	name            TEXT PRIMARY KEY,
	src             TEXT NOT NULL,             -- auto | image:REF | a container file name
	scheme          TEXT NOT NULL DEFAULT 'http',
	health          TEXT NOT NULL DEFAULT '/',
	lifetime        TEXT NOT NULL DEFAULT 'service', -- service | command
	build_dir       TEXT NOT NULL DEFAULT '/',
	port            INTEGER NOT NULL DEFAULT 0, -- as asked (0: the image's EXPOSE)
	container_port  INTEGER,                    -- as resolved
	image           TEXT NOT NULL,              -- the tag (cm-app-NAME:N) or the image:REF
	image_id        TEXT,
	built           INTEGER NOT NULL DEFAULT 0, -- 1: the image is ours (removed with the app)
	generation      INTEGER NOT NULL DEFAULT 1,
	docker_id       TEXT,
	host_port       INTEGER,                    -- published on 127.0.0.1
	container_ip    TEXT,                       -- on the bridge network: what nginx and the health checks use
	status          TEXT NOT NULL,              -- starting | healthy | unhealthy | ready (command) | deleting
	last_check      INTEGER,                    -- ms
	last_ok         INTEGER,
	last_error      TEXT,
	failures        INTEGER NOT NULL DEFAULT 0, -- consecutive failed checks
	restarts        INTEGER NOT NULL DEFAULT 0,
	restart_streak  INTEGER NOT NULL DEFAULT 0, -- restarts since it was last healthy (back-off)
	next_restart_at INTEGER,                    -- ms: back-off for restarting a dead container
	last_job        INTEGER,                    -- the create/update job that wrote it (re-runs are idempotent)
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL
);
