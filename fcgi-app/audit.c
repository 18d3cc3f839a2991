/* audit.c: one audit row per request, written after the response has been flushed. */
#include "config.h"
#include "app.h"

#include <string.h>

void cm_audit_write(struct cm_req *r)
{
	static const char *sql = "INSERT INTO audit(ts, request_id, user, remote_addr, method, path, cuid, action, "
				 "status, error_code, duration_ms, job_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";
	struct cm_error err;
	char ts[32];
	cm_time_rfc3339(ts, cm_now_ms());
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_warn("audit: %s", err.message);
		return;
	}
	double dur = (double)(cm_monotonic_ms() - r->start_ms);
	sqlite3_bind_text(st, 1, ts, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->request_id, -1, SQLITE_STATIC);
	if (r->user[0])
		sqlite3_bind_text(st, 3, r->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, r->remote_addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, r->method, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, r->path, -1, SQLITE_STATIC);
	if (r->cuid[0])
		sqlite3_bind_text(st, 7, r->cuid, -1, SQLITE_STATIC);
	if (r->action[0])
		sqlite3_bind_text(st, 8, r->action, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 9, r->status);
	if (r->error_code[0])
		sqlite3_bind_text(st, 10, r->error_code, -1, SQLITE_STATIC);
	sqlite3_bind_double(st, 11, dur);
	if (r->job_id > 0)
		sqlite3_bind_int64(st, 12, r->job_id);
	if (sqlite3_step(st) != SQLITE_DONE)
		cm_warn("audit insert failed: %s", sqlite3_errmsg(r->app->db.h));
	sqlite3_reset(st);
}
