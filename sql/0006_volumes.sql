-- 0006: containers mount named volumes and allowed host directories (volumes, canonical JSON
-- [{type, source, target, read_only}]); the JSON representation shows them.
-- (Rebuilt with the usual copy-and-rename; migrations run with foreign keys off.)
CREATE TABLE containers_new (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	cuid          TEXT NOT NULL UNIQUE,
	docker_id     TEXT,
	image         TEXT NOT NULL,
	command       TEXT NOT NULL,
	env           TEXT NOT NULL,
	tags          TEXT NOT NULL,
	cpus          REAL,
	memory        INTEGER NOT NULL,
	pids          INTEGER NOT NULL,
	ports         TEXT NOT NULL,
	ports_actual  TEXT,
	status        TEXT NOT NULL,
	exit_code     INTEGER,
	started_at    INTEGER,
	finished_at   INTEGER,
	restart_count INTEGER NOT NULL DEFAULT 0,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL,
	version       INTEGER NOT NULL DEFAULT 1,
	owner         TEXT,
	volumes       TEXT NOT NULL DEFAULT '[]',
	doc           TEXT GENERATED ALWAYS AS (json_object(
		'cuid', cuid,
		'image', image,
		'command', json(command),
		'env', json(env),
		'tags', json(tags),
		'resources', json_object('cpus', cpus, 'memory', memory, 'pids', pids),
		'ports', json(CASE WHEN ports_actual IS NOT NULL AND ports_actual != '' THEN ports_actual ELSE ports END),
		'volumes', json(volumes),
		'status', status,
		'docker_id', docker_id,
		'exit_code', exit_code,
		'started_at', CASE WHEN started_at > 0 THEN strftime('%Y-%m-%dT%H:%M:%fZ', started_at / 1000.0, 'unixepoch') END,
		'finished_at', CASE WHEN finished_at > 0 THEN strftime('%Y-%m-%dT%H:%M:%fZ', finished_at / 1000.0, 'unixepoch') END,
		'restart_count', restart_count,
		'created_at', strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1000.0, 'unixepoch'),
		'updated_at', strftime('%Y-%m-%dT%H:%M:%fZ', updated_at / 1000.0, 'unixepoch')
	)) STORED
);
INSERT INTO containers_new(seq, cuid, docker_id, image, command, env, tags, cpus, memory, pids, ports,
	ports_actual, status, exit_code, started_at, finished_at, restart_count, created_at, updated_at, version, owner)
SELECT seq, cuid, docker_id, image, command, env, tags, cpus, memory, pids, ports,
	ports_actual, status, exit_code, started_at, finished_at, restart_count, created_at, updated_at, version, owner
FROM containers;
-- keep the sequence: a seq is never handed out twice, even for rows deleted before
INSERT INTO sqlite_sequence(name, seq)
	SELECT 'containers_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'containers_new');
UPDATE sqlite_sequence SET seq = (SELECT MAX(seq) FROM sqlite_sequence WHERE name IN ('containers', 'containers_new'))
	WHERE name = 'containers_new';
DROP TABLE containers;
ALTER TABLE containers_new RENAME TO containers;
CREATE INDEX containers_status ON containers(status, seq);
