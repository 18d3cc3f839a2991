-- 0001_init.sql: containers, tags, jobs, runner state, audit, settings.
CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);

-- seq is never reused (AUTOINCREMENT), so keyset cursors never repeat or skip a row.
CREATE TABLE containers (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	cuid          TEXT NOT NULL UNIQUE,
	docker_id     TEXT,
	image         TEXT NOT NULL,
	command       TEXT NOT NULL,           -- JSON array
	env           TEXT NOT NULL,           -- JSON object
	tags          TEXT NOT NULL,           -- JSON array
	cpus          REAL,                    -- NULL = no CPU limit
	memory        INTEGER NOT NULL,        -- bytes
	pids          INTEGER NOT NULL,
	ports         TEXT NOT NULL,           -- JSON array as requested
	ports_actual  TEXT,                    -- JSON array as mapped by Docker
	status        TEXT NOT NULL,           -- creating|created|running|paused|restarting|exited|dead|removing
	exit_code     INTEGER,
	started_at    INTEGER,                 -- unix ms
	finished_at   INTEGER,
	restart_count INTEGER NOT NULL DEFAULT 0,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL,
	version       INTEGER NOT NULL DEFAULT 1,
	owner         TEXT
);
CREATE INDEX containers_status ON containers(status, seq);

CREATE TABLE container_tags (
	tag TEXT NOT NULL,
	seq INTEGER NOT NULL REFERENCES containers(seq) ON DELETE CASCADE,
	PRIMARY KEY (tag, seq)
) WITHOUT ROWID;
CREATE INDEX container_tags_seq ON container_tags(seq);

CREATE TABLE jobs (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	kind        TEXT NOT NULL,
	cuid        TEXT,
	args        TEXT NOT NULL DEFAULT '{}',
	status      TEXT NOT NULL DEFAULT 'queued',  -- queued|running|succeeded|failed|cancelled
	attempts    INTEGER NOT NULL DEFAULT 0,
	result      TEXT,
	err_status  INTEGER,
	err_kind    TEXT,
	err_code    TEXT,
	err_field   TEXT,
	err_message TEXT,
	request_id  TEXT,
	user        TEXT,
	created_at  INTEGER NOT NULL,
	started_at  INTEGER,
	finished_at INTEGER
);
CREATE INDEX jobs_status ON jobs(status, id);
CREATE INDEX jobs_cuid ON jobs(cuid, status);

CREATE TABLE runner_state (
	id              INTEGER PRIMARY KEY CHECK (id = 1),
	pid             INTEGER,
	heartbeat_ms    INTEGER,
	docker_ok       INTEGER NOT NULL DEFAULT 0,
	docker_version  TEXT,
	api_version     TEXT,
	compose_version TEXT,
	docker_error    TEXT
);

-- One row per HTTP request. ts is RFC 3339 UTC text so the sqlite3 shell can compare it.
CREATE TABLE audit (
	id          INTEGER PRIMARY KEY,
	ts          TEXT NOT NULL,
	request_id  TEXT,
	user        TEXT,
	remote_addr TEXT,
	method      TEXT,
	path        TEXT,
	cuid        TEXT,
	action      TEXT,
	status      INTEGER,
	error_code  TEXT,
	duration_ms REAL,
	job_id      INTEGER
);
CREATE INDEX audit_ts ON audit(ts);
CREATE INDEX audit_cuid ON audit(cuid, ts);
CREATE INDEX audit_user ON audit(user, ts);
CREATE INDEX audit_remote ON audit(remote_addr, status);
