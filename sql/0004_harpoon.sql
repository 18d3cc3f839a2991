-- 0004: harpoon-style named image definitions and the containers start_container hands out.
-- image_defs is rewritten from the definitions file at every start of the stack.
CREATE TABLE image_defs (
	name       TEXT PRIMARY KEY,
	def        TEXT NOT NULL,          -- normalized JSON (dockerfile, inline files, context, wait)
	loaded_at  INTEGER NOT NULL
);

-- One row per definition that has (or is getting) a container. state:
-- starting (job_id builds/creates/starts it) | running | failed | stopping
CREATE TABLE harpoon (
	image      TEXT PRIMARY KEY,
	state      TEXT NOT NULL,
	job_id     INTEGER,
	docker_id  TEXT,
	ports      TEXT,                   -- JSON object {"4545": 32772} as Docker mapped them
	tag        TEXT,                   -- image the container runs
	updated_at INTEGER NOT NULL
);

-- Lock queue per definition, FIFO by id. state: held | waiting. owner names the cm-ws process
-- that keeps a waiter's request open (waiters of a process that is gone are dropped).
CREATE TABLE harpoon_locks (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	image       TEXT NOT NULL,
	state       TEXT NOT NULL,
	request_id  TEXT,
	owner       TEXT,
	created_at  INTEGER NOT NULL,
	acquired_at INTEGER
);
CREATE INDEX harpoon_locks_image ON harpoon_locks(image, state, id);

-- Every build through the Engine API, with its output.
CREATE TABLE builds (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	image       TEXT NOT NULL,
	hash        TEXT NOT NULL,
	tag         TEXT NOT NULL,
	status      TEXT NOT NULL,         -- running | succeeded | failed
	log         TEXT,
	error       TEXT,
	job_id      INTEGER,
	started_at  INTEGER NOT NULL,
	finished_at INTEGER
);
CREATE INDEX builds_image ON builds(image, id);
