/* jobs.c: the /jobs resource. Every change is a job in SQLite; a request that asks to run in
 * the background (or outlives JOB_TIMEOUT) answers 202 with its job, and these endpoints show,
 * list, await and cancel jobs. Reads never hold a transaction while they wait. */
#include "config.h"
#include "app.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define LIST_DEFAULT 50
#define LIST_MAX 500
#define WAIT_MAX 60

#define JOB_COLS                                                                                              \
	"id, kind, cuid, status, result, err_status, err_kind, err_code, err_field, err_message, request_id, " \
	"created_at, started_at, finished_at, progress, attempts"
enum { J_ID, J_KIND, J_CUID, J_STATUS, J_RESULT, J_ESTATUS, J_EKIND, J_ECODE, J_EFIELD, J_EMSG, J_RID, J_CREATED,
       J_STARTED, J_FINISHED, J_PROGRESS, J_ATTEMPTS };

static const char *const job_statuses[] = {"queued", "running", "succeeded", "failed", "cancelled"};

static void kv_time_or_null(yajl_gen g, sqlite3_stmt *st, int col, const char *k)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		cm_jg_str(g, k);
		cm_jg_null(g);
	} else {
		cm_jg_kv_time(g, k, sqlite3_column_int64(st, col));
	}
}

/* A stored JSON text (result, progress) as a value; anything unparsable as a string. */
static void kv_json(yajl_gen g, const char *k, const char *text)
{
	cm_jg_str(g, k);
	struct cm_error err;
	yajl_val v = text ? cm_json_parse(text, strlen(text), &err) : NULL;
	if (v) {
		cm_jg_value(g, v);
		yajl_tree_free(v);
	} else if (text) {
		cm_jg_str(g, text);
	} else {
		cm_jg_null(g);
	}
}

static void emit_job(yajl_gen g, sqlite3_stmt *st)
{
	int64_t id = sqlite3_column_int64(st, J_ID);
	const char *status = cm_col_str(st, J_STATUS);
	char url[48];
	snprintf(url, sizeof url, "/jobs/%lld", (long long)id);
	yajl_gen_map_open(g);
	cm_jg_kv_int(g, "id", id);
	cm_jg_kv_str(g, "kind", cm_col_str(st, J_KIND));
	cm_jg_kv_str(g, "cuid", cm_col_str(st, J_CUID));
	cm_jg_kv_str(g, "status", status);
	kv_json(g, "progress", cm_col_str(st, J_PROGRESS));
	kv_json(g, "result", status && !strcmp(status, "succeeded") ? cm_col_str(st, J_RESULT) : NULL);
	cm_jg_str(g, "error");
	if (status && (!strcmp(status, "failed") || !strcmp(status, "cancelled"))) {
		yajl_gen_map_open(g);
		cm_jg_kv_int(g, "status", sqlite3_column_int(st, J_ESTATUS) ? sqlite3_column_int(st, J_ESTATUS) : 500);
		cm_jg_kv_str(g, "error", cm_col_str(st, J_EKIND) ? cm_col_str(st, J_EKIND) : "compose_error");
		cm_jg_kv_str(g, "code", cm_col_str(st, J_ECODE) ? cm_col_str(st, J_ECODE) : "JOB_FAILED");
		cm_jg_kv_str(g, "field", cm_col_str(st, J_EFIELD));
		cm_jg_kv_str(g, "message", cm_col_str(st, J_EMSG) ? cm_col_str(st, J_EMSG) : "the operation failed");
		yajl_gen_map_close(g);
	} else {
		cm_jg_null(g);
	}
	cm_jg_kv_int(g, "attempts", sqlite3_column_int64(st, J_ATTEMPTS));
	cm_jg_kv_str(g, "request_id", cm_col_str(st, J_RID));
	kv_time_or_null(g, st, J_CREATED, "created_at");
	kv_time_or_null(g, st, J_STARTED, "started_at");
	kv_time_or_null(g, st, J_FINISHED, "finished_at");
	cm_jg_kv_str(g, "status_url", url);
	yajl_gen_map_close(g);
}

/* ---- pools of held workers: an flock on one of RUN_DIR/POOL.N.lock ---- */

int cm_hold_slots(const struct cm_app *app, enum cm_hold pool)
{
	long w = app->cfg.workers_max;
	long n = pool == CM_HOLD_FOLLOW ? w / 4 : pool == CM_HOLD_WAIT ? w / 2 : w - w / 4;
	return n < 1 ? 1 : (int)n;
}

int cm_hold_slot(const struct cm_app *app, enum cm_hold pool)
{
	const char *name = pool == CM_HOLD_FOLLOW ? "follow" : pool == CM_HOLD_WAIT ? "wait" : "busy";
	int slots = cm_hold_slots(app, pool);
	for (int i = 0; i < slots; i++) {
		char p[PATH_MAX];
		if (cm_pathf(p, sizeof p, "%s/%s.%d.lock", app->cfg.run_dir, name, i) < 0)
			return -1;
		int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		close(fd);
	}
	return -1;
}

void cm_respond_pool_full(struct cm_req *r, enum cm_hold pool, const char *code, const char *field, const char *hint)
{
	struct cm_error err;
	cm_err_set(&err, 503, "unavailable", code, field, "%d requests already %s; %s", cm_hold_slots(r->app, pool),
		   pool == CM_HOLD_FOLLOW ? "follow job logs" : pool == CM_HOLD_WAIT ? "wait for jobs" : "hold a worker", hint);
	err.limit = cm_hold_slots(r->app, pool);
	cm_respond_error(r, &err, "Retry-After: 5\r\n");
}

void cm_respond_job_accepted(struct cm_req *r, int64_t id)
{
	char hdr[160], body[200];
	bool prefer = !r->async_asked && r->async;
	snprintf(hdr, sizeof hdr, "Location: /jobs/%lld\r\n%s", (long long)id,
		 prefer ? "Preference-Applied: respond-async\r\n" : "");
	snprintf(body, sizeof body, "{\"job_id\":%lld,\"status_url\":\"/jobs/%lld\",\"status\":\"queued\"}", (long long)id,
		 (long long)id);
	cm_respond_json(r, 202, hdr, body);
}

bool cm_refuse_async(struct cm_req *r, const char *why)
{
	if (!r->async_asked)
		return false;
	cm_respond_errorf(r, 400, "validation_error", "ASYNC_NOT_SUPPORTED", "async", "async is not available here: %s", why);
	return true;
}

/* The {id} path parameter; answers 400 itself when it is not a job id. */
int64_t cm_path_job_id(struct cm_req *r)
{
	const char *s = r->params[0];
	if (!*s || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s) || s[0] == '0') {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_JOB_ID", "id", "'%.40s' is not a job id (a positive integer)",
				  cm_valid_utf8(s, strlen(s)) ? s : "?");
		return -1;
	}
	return strtoll(s, NULL, 10);
}

/* Steps to job id's row; answers 404 or the database error itself and returns NULL. */
static sqlite3_stmt *job_row(struct cm_req *r, int64_t id)
{
	static const char *sql = "SELECT " JOB_COLS " FROM jobs WHERE id = ?";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return NULL;
	}
	sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return st;
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		cm_respond_errorf(r, 404, "not_found", "JOB_NOT_FOUND", "id", "job %lld not found", (long long)id);
	else
		cm_respond_error(r, (cm_db_fail(&r->app->db, &err, "read job"), &err), NULL);
	return NULL;
}

static void respond_job(struct cm_req *r, int64_t id, int status)
{
	sqlite3_stmt *st = job_row(r, id);
	if (!st)
		return;
	const char *cuid = cm_col_str(st, J_CUID);
	if (cuid && cm_valid_cuid(cuid))
		snprintf(r->cuid, sizeof r->cuid, "%s", cuid);
	yajl_gen g = cm_jg_new();
	emit_job(g, st);
	sqlite3_reset(st);
	cm_respond_gen(r, status, g);
}

void h_job_get(struct cm_req *r)
{
	int64_t id = cm_path_job_id(r);
	if (id < 0)
		return;
	r->job_id = id;
	const char *w = cm_req_query(r, "wait");
	if (w) {
		char *end;
		errno = 0;
		double secs = strtod(w, &end);
		if (errno || !*w || *end || !(secs >= 0 && secs <= WAIT_MAX)) {
			cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "wait",
					  "wait must be a number of seconds from 0 to %d", WAIT_MAX);
			return;
		}
		/* long poll: the runner tells us when the job ends; no transaction is held */
		sqlite3_stmt *st = job_row(r, id);
		if (!st)
			return;
		sqlite3_reset(st);
		struct cm_error err = {0};
		/* a wait beyond CM_POLL_FREE holds a waiter slot (none free: 503, unless it has ended) */
		int slot = -1;
		if (secs > CM_POLL_FREE) {
			int ended = cm_job_await(&r->app->db, r->app->runner_sock, id, 0, &err);
			if (ended < 0) {
				cm_respond_error(r, &err, NULL);
				return;
			}
			if (!ended && (slot = cm_hold_slot(r->app, CM_HOLD_WAIT)) < 0) {
				cm_respond_pool_full(r, CM_HOLD_WAIT, "TOO_MANY_WAITERS", "wait",
						     "retry, or wait at most " CM_STR(CM_POLL_FREE) " seconds");
				return;
			}
			if (ended)
				secs = 0;
		}
		/* the first second is free; past it the wait holds a busy slot, and without one the
		 * answer is the job as it is then (a long poll may always end early) */
		long ms = (long)(secs * 1000), free_ms = ms < CM_WAIT_FREE_MS ? ms : CM_WAIT_FREE_MS;
		int busy = -1;
		int rc = cm_job_await(&r->app->db, r->app->runner_sock, id, free_ms, &err);
		if (rc == 0 && ms > free_ms && (busy = cm_hold_slot(r->app, CM_HOLD_BUSY)) >= 0)
			rc = cm_job_await(&r->app->db, r->app->runner_sock, id, ms - free_ms, &err);
		if (busy >= 0)
			close(busy);
		if (slot >= 0)
			close(slot);
		if (rc < 0) {
			cm_respond_error(r, &err, NULL);
			return;
		}
	}
	respond_job(r, id, 200);
}

static bool valid_filter_text(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (!n || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-_.:*", c)))
			return false;
	}
	return true;
}

void h_jobs_list(struct cm_req *r)
{
	static const char *sql = "SELECT " JOB_COLS " FROM jobs WHERE id < ?1 "
				 "AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2))) "
				 "AND (?3 IS NULL OR cuid = ?3) AND (?4 IS NULL OR kind = ?4) ORDER BY id DESC LIMIT ?5";
	struct cm_app *app = r->app;
	struct cm_error err = {0};
	const char *status = cm_req_query(r, "status"), *cuid = cm_req_query(r, "cuid"), *kind = cm_req_query(r, "kind");
	const char *lim = cm_req_query(r, "limit"), *cur = cm_req_query(r, "cursor");
	long limit = LIST_DEFAULT;
	if (lim) {
		char *end;
		errno = 0;
		limit = strtol(lim, &end, 10);
		if (errno || !*lim || *end || limit < 1 || limit > LIST_MAX) {
			cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "limit", "limit must be an integer from 1 to %d",
					  LIST_MAX);
			return;
		}
	}
	char statuses[128] = "";
	if (status && cm_status_filter(status, job_statuses, CM_ARRAY_LEN(job_statuses), statuses, sizeof statuses, &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (cuid && !valid_filter_text(cuid, 70)) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "cuid", "cuid must be a container id");
		return;
	}
	if (kind && !valid_filter_text(kind, 32)) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "kind", "kind must be a job kind such as create");
		return;
	}
	char fkey[256];
	snprintf(fkey, sizeof fkey, "jobs|%s|%s", status ? statuses : "", kind ? kind : "");
	uint32_t filter = cm_filter_hash(fkey, cuid);
	struct cm_cursor c;
	if (cm_page_cursor(r, cur, filter, &c) < 0)
		return;
	sqlite3_stmt *st = cm_db_stmt(&app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	sqlite3_bind_int64(st, 1, c.seq);
	if (status)
		sqlite3_bind_text(st, 2, statuses, -1, SQLITE_STATIC);
	if (cuid)
		sqlite3_bind_text(st, 3, cuid, -1, SQLITE_STATIC);
	if (kind)
		sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, limit + 1);
	cm_respond_page(r, st, "jobs", limit, J_ID, filter, emit_job);
}

void h_job_delete(struct cm_req *r)
{
	if (cm_refuse_async(r, "cancelling is immediate"))
		return;
	int64_t id = cm_path_job_id(r);
	if (id < 0)
		return;
	r->job_id = id;
	struct cm_error err = {0};
	int rc = cm_job_cancel(&r->app->db, id, 409, "cancelled", "JOB_CANCELLED", "the job was cancelled (DELETE /jobs/{id})",
			       &err);
	if (rc < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (rc == 1) {
		/* whoever waits for it (a synchronous request) hears it ended */
		cm_job_poke(r->app->runner_sock, id);
		respond_job(r, id, 200);
		return;
	}
	sqlite3_stmt *st = job_row(r, id);
	if (!st)
		return;
	char status[16];
	snprintf(status, sizeof status, "%s", cm_col_str(st, J_STATUS));
	sqlite3_reset(st);
	if (!strcmp(status, "running"))
		cm_respond_errorf(r, 409, "conflict", "JOB_RUNNING", "id", "job %lld is running; only a queued job can be cancelled",
				  (long long)id);
	else
		cm_respond_errorf(r, 409, "conflict", "JOB_FINISHED", "id", "job %lld has already ended (%s)", (long long)id,
				  status);
}
