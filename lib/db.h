/* db.h: the one SQLite access module: open with pragmas, migrations, cached statements, transactions. */
#ifndef CM_DB_H
#define CM_DB_H

#include <sqlite3.h>
#include "cm.h"

#define CM_DB_STMT_CACHE 64

struct cm_db {
	sqlite3 *h;
	struct {
		const char *sql; /* identity: the string literal's address */
		sqlite3_stmt *st;
	} cache[CM_DB_STMT_CACHE];
};

/* Opens (creating if needed) the database, sets WAL, busy timeout, foreign keys,
 * and applies pending migrations. Returns -1 and fills err on failure. */
int cm_db_open(struct cm_db *db, const char *path, struct cm_error *err);
void cm_db_close(struct cm_db *db);
/* Cached prepared statement for a string literal; reset and unbound. NULL on error. */
sqlite3_stmt *cm_db_stmt(struct cm_db *db, const char *sql, struct cm_error *err);
int cm_db_exec(struct cm_db *db, const char *sql, struct cm_error *err);
/* BEGIN IMMEDIATE (writers take the lock up front: no deadlock on upgrade). */
int cm_db_begin(struct cm_db *db, struct cm_error *err);
int cm_db_commit(struct cm_db *db, struct cm_error *err);
void cm_db_rollback(struct cm_db *db);
/* Fills err from the connection's last error (503 when busy, else 500). Returns -1. */
int cm_db_fail(struct cm_db *db, struct cm_error *err, const char *what);
/* Returns a random secret stored under settings[key], creating it once. */
int cm_db_secret(struct cm_db *db, const char *key, unsigned char out[32], struct cm_error *err);
/* This database's instance id (16 hex digits + NUL): the value of the io.container-manager.instance
 * label on everything the stack creates in Docker. Several stacks may share one dockerd; the
 * label is how each tells its own containers and volumes from everyone else's. */
int cm_db_instance(struct cm_db *db, char out[17], struct cm_error *err);
/* sqlite3_column_text as a const char * ("" never NULL unless the column is NULL). */
static inline const char *cm_col_str(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

#endif
