/* db.c: SQLite connection setup, migrations and statement cache. */
#include "config.h"
#include "db.h"
#include "migrations.h"

#include <string.h>
#include <stdio.h>
#include <unistd.h>

int cm_db_fail(struct cm_db *db, struct cm_error *err, const char *what)
{
	int code = db->h ? sqlite3_errcode(db->h) : SQLITE_ERROR;
	const char *msg = db->h ? sqlite3_errmsg(db->h) : "no connection";
	if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
		return cm_err_set(err, 503, "unavailable", "DB_BUSY", NULL, "%s: database busy", what);
	if (code == SQLITE_FULL)
		return cm_err_set(err, 507, "io_error", "DISK_FULL", NULL, "%s: disk full", what);
	return cm_err_set(err, 500, "internal_error", "DB_ERROR", NULL, "%s: %s", what, msg);
}

int cm_db_exec(struct cm_db *db, const char *sql, struct cm_error *err)
{
	char *emsg = NULL;
	if (sqlite3_exec(db->h, sql, NULL, NULL, &emsg) != SQLITE_OK) {
		cm_err_set(err, 500, "internal_error", "DB_ERROR", NULL, "sql: %s", emsg ? emsg : "error");
		if (sqlite3_errcode(db->h) == SQLITE_BUSY)
			cm_err_set(err, 503, "unavailable", "DB_BUSY", NULL, "database busy");
		sqlite3_free(emsg);
		return -1;
	}
	return 0;
}

int cm_db_begin(struct cm_db *db, struct cm_error *err)
{
	sqlite3_stmt *st = cm_db_stmt(db, "BEGIN IMMEDIATE", err);
	if (!st)
		return -1;
	if (sqlite3_step(st) != SQLITE_DONE)
		return cm_db_fail(db, err, "begin");
	return 0;
}

int cm_db_commit(struct cm_db *db, struct cm_error *err)
{
	sqlite3_stmt *st = cm_db_stmt(db, "COMMIT", err);
	if (!st)
		return -1;
	if (sqlite3_step(st) != SQLITE_DONE) {
		cm_db_fail(db, err, "commit");
		cm_db_rollback(db);
		return -1;
	}
	return 0;
}

void cm_db_rollback(struct cm_db *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

sqlite3_stmt *cm_db_stmt(struct cm_db *db, const char *sql, struct cm_error *err)
{
	size_t i;
	for (i = 0; i < CM_DB_STMT_CACHE && db->cache[i].sql; i++) {
		if (db->cache[i].sql == sql) {
			sqlite3_stmt *st = db->cache[i].st;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			return st;
		}
	}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(db->h, sql, -1, i < CM_DB_STMT_CACHE ? SQLITE_PREPARE_PERSISTENT : 0, &st,
			       NULL) != SQLITE_OK) {
		cm_db_fail(db, err, "prepare");
		return NULL;
	}
	if (i < CM_DB_STMT_CACHE) {
		db->cache[i].sql = sql;
		db->cache[i].st = st;
	} else {
		/* cache full: should not happen; keep it working by leaking into the last slot */
		sqlite3_finalize(db->cache[CM_DB_STMT_CACHE - 1].st);
		db->cache[CM_DB_STMT_CACHE - 1].sql = sql;
		db->cache[CM_DB_STMT_CACHE - 1].st = st;
	}
	return st;
}

/* true when the migration is recorded (a plain read: no lock beyond the snapshot) */
static bool applied(struct cm_db *db, int version)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db->h, "SELECT 1 FROM schema_migrations WHERE version = ?", -1, &st, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_int(st, 1, version);
	bool yes = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return yes;
}

static int migrate(struct cm_db *db, struct cm_error *err)
{
	/* An up-to-date database is only read here: a process starting while someone else holds
	 * the write lock (a busy runner, an operator's sqlite3 session) does not wait for it. */
	bool all = true;
	for (const struct cm_migration *m = cm_migrations; m->version && all; m++)
		all = applied(db, m->version);
	if (all)
		return 0;
	if (cm_db_exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
			   "name TEXT NOT NULL, applied_at TEXT NOT NULL)", err) < 0)
		return -1;
	for (const struct cm_migration *m = cm_migrations; m->version; m++) {
		if (cm_db_exec(db, "BEGIN IMMEDIATE", err) < 0)
			return -1;
		sqlite3_stmt *st;
		if (sqlite3_prepare_v2(db->h, "SELECT 1 FROM schema_migrations WHERE version = ?", -1, &st, NULL) !=
		    SQLITE_OK) {
			cm_db_fail(db, err, "migrate");
			cm_db_rollback(db);
			return -1;
		}
		sqlite3_bind_int(st, 1, m->version);
		int rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc == SQLITE_ROW) {
			cm_db_rollback(db);
			continue;
		}
		if (rc != SQLITE_DONE) {
			cm_db_fail(db, err, "migrate");
			cm_db_rollback(db);
			return -1;
		}
		if (cm_db_exec(db, m->sql, err) < 0) {
			cm_err_prefix(err, "migration %s", m->name);
			cm_db_rollback(db);
			return -1;
		}
		if (sqlite3_prepare_v2(db->h,
				       "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, "
				       "strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
				       -1, &st, NULL) != SQLITE_OK) {
			cm_db_fail(db, err, "migrate");
			cm_db_rollback(db);
			return -1;
		}
		sqlite3_bind_int(st, 1, m->version);
		sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE) {
			cm_db_fail(db, err, "migrate");
			cm_db_rollback(db);
			return -1;
		}
		if (cm_db_exec(db, "COMMIT", err) < 0) {
			cm_db_rollback(db);
			return -1;
		}
	}
	return 0;
}

int cm_db_open(struct cm_db *db, const char *path, struct cm_error *err)
{
	memset(db, 0, sizeof *db);
	if (sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		cm_db_fail(db, err, "open database");
		cm_db_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db->h, 15000);
	sqlite3_extended_result_codes(db->h, 0);
	if (cm_db_exec(db, "PRAGMA journal_mode=WAL", err) < 0 ||
	    cm_db_exec(db, "PRAGMA synchronous=NORMAL", err) < 0 ||
	    cm_db_exec(db, "PRAGMA journal_size_limit=16777216", err) < 0 ||
	    /* migrations rebuild tables: no cascading while they run */
	    cm_db_exec(db, "PRAGMA foreign_keys=OFF", err) < 0 || migrate(db, err) < 0 ||
	    cm_db_exec(db, "PRAGMA foreign_keys=ON", err) < 0) {
		cm_db_close(db);
		return -1;
	}
	return 0;
}

void cm_db_close(struct cm_db *db)
{
	for (size_t i = 0; i < CM_DB_STMT_CACHE; i++)
		if (db->cache[i].st)
			sqlite3_finalize(db->cache[i].st);
	if (db->h)
		sqlite3_close(db->h);
	memset(db, 0, sizeof *db);
}

int cm_db_secret(struct cm_db *db, const char *key, unsigned char out[32], struct cm_error *err)
{
	static const char *sel = "SELECT value FROM settings WHERE key = ?";
	static const char *ins = "INSERT OR IGNORE INTO settings(key, value) VALUES (?, ?)";
	for (int attempt = 0; attempt < 2; attempt++) {
		sqlite3_stmt *st = cm_db_stmt(db, sel, err);
		if (!st)
			return -1;
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 32) {
			memcpy(out, sqlite3_column_blob(st, 0), 32);
			sqlite3_reset(st);
			return 0;
		}
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return cm_db_fail(db, err, "read secret");
		unsigned char fresh[32];
		if (cm_random_bytes(fresh, sizeof fresh) < 0)
			return cm_err_internal(err, "getrandom failed");
		st = cm_db_stmt(db, ins, err);
		if (!st)
			return -1;
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, fresh, sizeof fresh, SQLITE_TRANSIENT);
		if (sqlite3_step(st) != SQLITE_DONE)
			return cm_db_fail(db, err, "store secret");
		sqlite3_reset(st);
	}
	return cm_err_internal(err, "secret %s could not be created", key);
}

int cm_db_instance(struct cm_db *db, char out[17], struct cm_error *err)
{
	unsigned char inst[32];
	if (cm_db_secret(db, "instance_id", inst, err) < 0)
		return -1;
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", inst[i]);
	return 0;
}
