/* t_dbstress.c: 8 processes x 1,000 write transactions on one database through the project's
 * SQLite layer (WAL, busy timeout, BEGIN IMMEDIATE), as the workers and the runner share it.
 * No transaction may fail with SQLITE_BUSY (or anything else), every row must be there
 * afterwards, and the file must pass integrity_check. Then MAX_CONTAINERS' count
 * (cm_container_quota) on the same database: what it counts and the error it gives. */
#include "config.h"
#include "audit.h"
#include "db.h"
#include "store.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROCS 8
#define TX 1000

static int child(const char *path, int n)
{
	struct cm_db db;
	struct cm_error err = {0};
	if (cm_db_open(&db, path, &err) < 0) {
		fprintf(stderr, "child %d: open: %s\n", n, err.message);
		return 2;
	}
	int failed = 0;
	for (int i = 0; i < TX; i++) {
		char rid[40];
		snprintf(rid, sizeof rid, "stress-%d-%d", n, i);
		struct cm_audit_row row = {.ts = "2026-01-01T00:00:00.000Z", .request_id = rid, .method = "POST",
					   .path = "/stress", .action = "stress", .status = 200};
		if (cm_db_begin(&db, &err) < 0) {
			failed++;
			continue;
		}
		if (cm_audit_insert(&db, &row, &err) < 0 || cm_db_commit(&db, &err) < 0) {
			cm_db_rollback(&db);
			failed++;
		}
	}
	cm_db_close(&db);
	if (failed)
		fprintf(stderr, "child %d: %d failed transactions (last: %s)\n", n, failed, err.message);
	return failed ? 1 : 0;
}

/* REST rows, harpoon definitions with a container (not failed ones), apps and queued app creates */
static void quota_checks(struct cm_db *db)
{
	struct cm_error err = {0};
	ok(cm_container_quota(db, 1, NULL, &err) == 0, "quota: an empty instance has room for one");
	ok(cm_db_exec(db, "INSERT INTO harpoon(image, state, updated_at) VALUES ('h1', 'running', 0), ('h2', 'failed', 0), "
			  "('h3', 'starting', 0)", &err) == 0 &&
	   cm_db_exec(db, "INSERT INTO jobs(kind, cuid, args, created_at) VALUES ('app.create', 'app:a1', '{}', 0), "
			  "('app.create', 'app:a2', '{}', 0), ('create', 'cx', '{}', 0)", &err) == 0 &&
	   cm_db_exec(db, "UPDATE jobs SET status = 'succeeded' WHERE cuid = 'app:a2'", &err) == 0 &&
	   cm_db_exec(db, "INSERT INTO apps(name, src, image, status, created_at, updated_at) VALUES "
			  "('a1', 'auto', 'x', 'starting', 0, 0), ('a3', 'auto', 'x', 'healthy', 0, 0)", &err) == 0,
	   "quota: rows inserted (%s)", err.message);
	/* counted: h1, h3, a1 (its create job too, once), a3 = 4 */
	ok(cm_container_quota(db, 5, NULL, &err) == 0, "quota: 4 used, room under 5");
	cm_err_clear(&err);
	ok(cm_container_quota(db, 4, NULL, &err) < 0 && err.status == 429 && !strcmp(err.code, "CONTAINER_LIMIT_REACHED") &&
	   err.limit == 4 && err.used == 4,
	   "quota: 4 used of 4 is 429 CONTAINER_LIMIT_REACHED {limit 4, used 4} (%d %s %lld %lld)", err.status, err.code,
	   err.limit, err.used);
	char *body = cm_error_json(&err, "rid", NULL, 0);
	ok(body && strstr(body, "\"limit\":4") && strstr(body, "\"used\":4"), "quota: the error body names limit and used");
	free(body);
	ok(cm_container_quota(db, 4, "h1", &err) == 0, "quota: a definition's own row is not counted when it is reused");
	ok(cm_container_quota(db, 4, "h2", &err) < 0, "quota: a failed definition's row never counted");
}

int main(void)
{
	char dir[] = "/tmp/cm-dbstress.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char path[256];
	snprintf(path, sizeof path, "%s/cm.sqlite", dir);
	struct cm_db db;
	struct cm_error err = {0};
	ok(cm_db_open(&db, path, &err) == 0, "database created and migrated");
	pid_t pids[PROCS];
	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(child(path, i));
	}
	int bad = 0;
	for (int i = 0; i < PROCS; i++) {
		int st = 0;
		if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad++;
	}
	ok(bad == 0, "%d processes x %d write transactions: none failed (no SQLITE_BUSY reached a caller)", PROCS, TX);
	sqlite3_stmt *st = cm_db_stmt(&db, "SELECT count(*) FROM audit WHERE action = 'stress'", &err);
	long long n = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	if (st)
		sqlite3_reset(st);
	ok(n == PROCS * TX, "all %d rows are there (%lld)", PROCS * TX, n);
	st = cm_db_stmt(&db, "PRAGMA integrity_check", &err);
	const char *ic = st && sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : "";
	char icbuf[64];
	snprintf(icbuf, sizeof icbuf, "%s", ic ? ic : "");
	if (st)
		sqlite3_reset(st);
	is_str(icbuf, "ok", "integrity_check");
	quota_checks(&db);
	cm_db_close(&db);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "%s", dir);
	cm_rm_rf(cmd);
	return tap_done();
}
