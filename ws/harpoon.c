/* harpoon.c: harpoon's container-manager endpoints, served from cm-ws's event loop so that a
 * request may wait (for a build, for a lock) without holding a worker:
 *
 *   POST /start_container  {image, ports, lock, lock_timeout}
 *   POST /stop_container   {image}
 *   POST /unlock_container {image}
 *   GET  /shutdown
 *
 * All state is in SQLite: the containers handed out (harpoon), the lock queues
 * (harpoon_locks, FIFO by id) and the jobs the runner performs (h.ensure, h.stop). This loop
 * keeps the open requests, decides in short transactions, and polls the jobs it waits for. */
#include "config.h"
#include "ws.h"
#include "audit.h"
#include "cm_config.h"
#include "db.h"
#include "harpoonreq.h"
#include "imagedef.h"
#include "json.h"
#include "store.h"

#include <libwebsockets.h>

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BODY_MAX 65536
#define POLL_US (50 * 1000)

enum hkind { HK_START, HK_STOP, HK_UNLOCK, HK_SHUTDOWN };
enum hphase { HP_BODY, HP_LOCK, HP_JOB, HP_REPLY, HP_DONE };

struct hreq {
	struct hreq *next;
	struct lws *wsi;
	enum hkind kind;
	enum hphase phase;
	char image[CM_IMAGEDEF_NAME_MAX + 1];
	char user[128], request_id[40], remote[64], path[64];
	struct cm_buf body;
	bool body_too_big;
	char *ports;         /* normalized JSON array */
	bool lock;
	int64_t lock_deadline; /* monotonic ms, 0 = none */
	int64_t lock_id;       /* its harpoon_locks row, 0 = none */
	bool lock_held;
	int64_t job_id;
	bool initiator;
	bool signal_after;     /* /shutdown: stop the stack once the answer is out */
	/* the answer */
	int status;
	char *resp;
	const char *ctype;
	char error_code[48];
	int64_t t0;
};

static const struct cm_config *hcfg;
static struct cm_db *hdb;
static bool hdb_ok;
static struct lws_context *hctx;
static struct hreq *reqs;
static bool shutting;
static char runner_sock[PATH_MAX];
static lws_sorted_usec_list_t poll_sul;

/* ------------------------------------------------------------------ answers */

static void audit_req(struct hreq *r)
{
	static const char *const actions[] = {"harpoon.start", "harpoon.stop", "harpoon.unlock", "harpoon.shutdown"};
	char ts[32];
	cm_time_rfc3339(ts, cm_now_ms());
	struct cm_audit_row row = {
		.ts = ts, .request_id = r->request_id, .user = r->user, .remote_addr = r->remote,
		.method = r->kind == HK_SHUTDOWN ? "GET" : "POST", .path = r->path, .action = actions[r->kind],
		.error_code = r->error_code[0] ? r->error_code : NULL, .status = r->status,
		.duration_ms = (double)(cm_monotonic_ms() - r->t0), .job_id = r->job_id, .cuid = r->image[0] ? r->image : NULL,
	};
	cm_audit_send(hcfg->run_dir, &row, hdb_ok ? hdb : NULL);
}

static void reply(struct hreq *r, int status, const char *ctype, char *body)
{
	if (r->phase == HP_REPLY || r->phase == HP_DONE) {
		free(body);
		return;
	}
	r->status = status;
	r->ctype = ctype;
	free(r->resp);
	r->resp = body;
	r->phase = HP_REPLY;
	if (r->wsi)
		lws_callback_on_writable(r->wsi);
}

static void reply_error(struct hreq *r, const struct cm_error *err)
{
	snprintf(r->error_code, sizeof r->error_code, "%s", err->code);
	int status = err->status >= 400 && err->status <= 599 ? err->status : 500;
	reply(r, status, "application/json", cm_error_json(err, r->request_id, NULL, r->job_id));
}

/* 404 with details.available: the names that are defined */
static void reply_unknown(struct hreq *r)
{
	char ts[32];
	cm_time_rfc3339(ts, cm_now_ms());
	yajl_gen g = cm_jg_new();
	if (!g)
		return;
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "error", "not_found");
	cm_jg_kv_str(g, "code", "IMAGE_DEFINITION_NOT_FOUND");
	char msg[160];
	snprintf(msg, sizeof msg, "no image definition named \"%s\"", r->image);
	cm_jg_kv_str(g, "message", msg);
	cm_jg_kv_int(g, "status", 404);
	cm_jg_kv_str(g, "request_id", r->request_id);
	cm_jg_kv_str(g, "timestamp", ts);
	cm_jg_str(g, "details");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "field", "image");
	cm_jg_str(g, "available");
	yajl_gen_array_open(g);
	static const char *sql = "SELECT name FROM image_defs ORDER BY name";
	struct cm_error err;
	sqlite3_stmt *st = hdb_ok ? cm_db_stmt(hdb, sql, &err) : NULL;
	while (st && sqlite3_step(st) == SQLITE_ROW)
		cm_jg_str(g, cm_col_str(st, 0));
	if (st)
		sqlite3_reset(st);
	yajl_gen_array_close(g);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	snprintf(r->error_code, sizeof r->error_code, "IMAGE_DEFINITION_NOT_FOUND");
	reply(r, 404, "application/json", cm_jg_finish(g));
}

static void reply_shutting(struct hreq *r)
{
	struct cm_error err = {0};
	cm_err_set(&err, 503, "shutting_down", "SHUTTING_DOWN", NULL, "the container manager is shutting down");
	reply_error(r, &err);
}

/* ------------------------------------------------------------------ runner */

static void poke_runner(int64_t job)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (snprintf(sa.sun_path, sizeof sa.sun_path, "%s", runner_sock) >= (int)sizeof sa.sun_path)
		return;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	char line[32];
	int n = snprintf(line, sizeof line, "%lld\n", (long long)job);
	/* only the wake-up matters: the outcome is read from the jobs table */
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		ssize_t w = send(fd, line, (size_t)n, MSG_NOSIGNAL);
		(void)w;
	}
	close(fd);
}

static void schedule_poll(void);

/* ------------------------------------------------------------------ locks */

static int lock_row_exec(const char *sql, int64_t a, const char *b, struct cm_error *err)
{
	sqlite3_stmt *st = cm_db_stmt(hdb, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, a);
	if (b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : cm_db_fail(hdb, err, "lock queue");
}

static struct hreq *find_lock_owner(int64_t lock_id)
{
	for (struct hreq *r = reqs; r; r = r->next)
		if (r->lock_id == lock_id && r->phase != HP_DONE)
			return r;
	return NULL;
}

static void ensure(struct hreq *r);

/* Inside a transaction: the oldest live waiter of image becomes the holder; waiters whose
 * request is gone are dropped on the way. Returns the promoted request or NULL. */
static struct hreq *promote_locked(const char *image, struct cm_error *err, int *rc)
{
	static const char *next = "SELECT id FROM harpoon_locks WHERE image = ? AND state = 'waiting' ORDER BY id LIMIT 1";
	*rc = 0;
	for (;;) {
		sqlite3_stmt *st = cm_db_stmt(hdb, next, err);
		if (!st) {
			*rc = -1;
			return NULL;
		}
		sqlite3_bind_text(st, 1, image, -1, SQLITE_STATIC);
		int s = sqlite3_step(st);
		int64_t id = s == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
		sqlite3_reset(st);
		if (s != SQLITE_ROW && s != SQLITE_DONE) {
			*rc = cm_db_fail(hdb, err, "lock queue");
			return NULL;
		}
		if (!id)
			return NULL;
		struct hreq *w = find_lock_owner(id);
		if (w && w->phase == HP_LOCK) {
			if (lock_row_exec("UPDATE harpoon_locks SET state = 'held', "
					  "acquired_at = CAST(strftime('%s','now') AS INTEGER) * 1000 WHERE id = ?1",
					  id, NULL, err) < 0) {
				*rc = -1;
				return NULL;
			}
			return w;
		}
		if (lock_row_exec("DELETE FROM harpoon_locks WHERE id = ?1", id, NULL, err) < 0) {
			*rc = -1;
			return NULL;
		}
	}
}

/* Gives up r's lock row (held or waiting); a held lock passes to the next waiter. */
static void release_lock(struct hreq *r)
{
	if (!r->lock_id || !hdb_ok)
		return;
	struct cm_error err = {0};
	int64_t id = r->lock_id;
	bool held = r->lock_held;
	r->lock_id = 0;
	r->lock_held = false;
	if (cm_db_begin(hdb, &err) < 0) {
		cm_error("lock %lld not released: %s", (long long)id, err.message);
		return;
	}
	int rc = lock_row_exec("DELETE FROM harpoon_locks WHERE id = ?1", id, NULL, &err);
	struct hreq *w = NULL;
	if (rc == 0 && held)
		w = promote_locked(r->image, &err, &rc);
	if (rc < 0 || cm_db_commit(hdb, &err) < 0) {
		cm_db_rollback(hdb);
		cm_error("lock %lld not released: %s", (long long)id, err.message);
		return;
	}
	if (w) {
		w->lock_held = true;
		w->lock_deadline = 0;
		ensure(w);
	}
}

/* ------------------------------------------------------------------ start */

/* Inside the caller's transaction: queues job kind for r's image and records it in the
 * image's harpoon row with row_sql (?1 image, ?2 job, ?3 now); commits, wakes the runner and
 * starts polling. Returns 0, or -1 with err (the transaction rolled back). */
static int queue_job(struct hreq *r, const char *kind, const char *args, const char *row_sql, struct cm_error *err)
{
	struct cm_buf key = {0};
	cm_buf_printf(&key, "h:%s", r->image);
	int64_t job = cm_job_insert(hdb, kind, cm_buf_str(&key), args, r->request_id, r->user, err);
	cm_buf_free(&key);
	sqlite3_stmt *st = job < 0 ? NULL : cm_db_stmt(hdb, row_sql, err);
	if (!st) {
		cm_db_rollback(hdb);
		return -1;
	}
	sqlite3_bind_text(st, 1, r->image, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, job);
	sqlite3_bind_int64(st, 3, cm_now_ms());
	int s = sqlite3_step(st);
	sqlite3_reset(st);
	if (s != SQLITE_DONE) {
		cm_db_fail(hdb, err, "record the container's state");
		cm_db_rollback(hdb);
		return -1;
	}
	if (cm_db_commit(hdb, err) < 0)
		return -1;
	r->job_id = job;
	r->phase = HP_JOB;
	poke_runner(job);
	schedule_poll();
	return 0;
}

/* Finds or queues the definition's container job; answers at once when it runs already. */
static void ensure(struct hreq *r)
{
	struct cm_error err = {0};
	if (shutting) {
		reply_shutting(r);
		release_lock(r);
		return;
	}
	if (cm_db_begin(hdb, &err) < 0)
		goto fail;
	static const char *sel = "SELECT state, job_id, docker_id, ports FROM harpoon WHERE image = ?";
	sqlite3_stmt *st = cm_db_stmt(hdb, sel, &err);
	if (!st)
		goto rollback;
	sqlite3_bind_text(st, 1, r->image, -1, SQLITE_STATIC);
	int s = sqlite3_step(st);
	if (s == SQLITE_ROW && !strcmp(cm_col_str(st, 0), "running") && cm_col_str(st, 2)) {
		struct cm_buf b = {0};
		cm_buf_printf(&b, "{\"ports\":%s,\"just_created\":false,\"container_id\":\"%s\"}",
			      cm_col_str(st, 3) ? cm_col_str(st, 3) : "{}", cm_col_str(st, 2));
		sqlite3_reset(st);
		cm_db_commit(hdb, &err);
		reply(r, 200, "application/json", strdup(cm_buf_str(&b)));
		cm_buf_free(&b);
		return;
	}
	if (s == SQLITE_ROW && !strcmp(cm_col_str(st, 0), "starting")) {
		r->job_id = sqlite3_column_int64(st, 1);
		r->initiator = false;
		sqlite3_reset(st);
		cm_db_commit(hdb, &err);
		r->phase = HP_JOB;
		schedule_poll();
		return;
	}
	sqlite3_reset(st);
	if (s != SQLITE_ROW && s != SQLITE_DONE) {
		cm_db_fail(hdb, &err, "read container state");
		goto rollback;
	}
	/* a new container for this definition: MAX_CONTAINERS, counted in this transaction (the
	 * definition's own row, failed or stopping, is about to be reused and is not counted) */
	if (cm_container_quota(hdb, hcfg->max_containers, r->image, &err) < 0)
		goto rollback;
	struct cm_buf args = {0};
	cm_buf_printf(&args, "{\"image\":\"%s\",\"ports\":%s}", r->image, r->ports ? r->ports : "[]");
	static const char *up = "INSERT INTO harpoon(image, state, job_id, updated_at) VALUES (?1, 'starting', ?2, ?3) "
				"ON CONFLICT(image) DO UPDATE SET state = 'starting', job_id = ?2, docker_id = NULL, "
				"ports = NULL, updated_at = ?3";
	r->initiator = true;
	int qrc = queue_job(r, "h.ensure", cm_buf_str(&args), up, &err);
	cm_buf_free(&args);
	if (qrc == 0)
		return;
	goto fail;
rollback:
	cm_db_rollback(hdb);
fail:
	reply_error(r, &err);
	release_lock(r);
}

/* lock:true: the caller takes the image's lock now, or queues for it. */
static void take_lock(struct hreq *r)
{
	struct cm_error err = {0};
	if (cm_db_begin(hdb, &err) < 0)
		goto fail;
	static const char *cnt = "SELECT count(*) FROM harpoon_locks WHERE image = ?";
	sqlite3_stmt *st = cm_db_stmt(hdb, cnt, &err);
	if (!st)
		goto rollback;
	sqlite3_bind_text(st, 1, r->image, -1, SQLITE_STATIC);
	int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_reset(st);
	if (n < 0) {
		cm_db_fail(hdb, &err, "lock queue");
		goto rollback;
	}
	static const char *ins = "INSERT INTO harpoon_locks(image, state, request_id, owner, created_at, acquired_at) "
				 "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
	st = cm_db_stmt(hdb, ins, &err);
	if (!st)
		goto rollback;
	char owner[32];
	snprintf(owner, sizeof owner, "cm-ws:%d", (int)getpid());
	int64_t now = cm_now_ms();
	sqlite3_bind_text(st, 1, r->image, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, n == 0 ? "held" : "waiting", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->request_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, owner, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 5, now);
	if (n == 0)
		sqlite3_bind_int64(st, 6, now);
	int s = sqlite3_step(st);
	sqlite3_reset(st);
	if (s != SQLITE_DONE) {
		cm_db_fail(hdb, &err, "lock queue");
		goto rollback;
	}
	int64_t id = sqlite3_last_insert_rowid(hdb->h);
	if (cm_db_commit(hdb, &err) < 0)
		goto fail;
	r->lock_id = id;
	if (n == 0) {
		r->lock_held = true;
		ensure(r);
	} else {
		r->phase = HP_LOCK;
		schedule_poll();
	}
	return;
rollback:
	cm_db_rollback(hdb);
fail:
	reply_error(r, &err);
}

/* ------------------------------------------------------------------ request bodies */

static bool definition_exists(const char *name, struct cm_error *err, bool *exists)
{
	static const char *sql = "SELECT 1 FROM image_defs WHERE name = ?";
	sqlite3_stmt *st = cm_db_stmt(hdb, sql, err);
	if (!st)
		return false;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int s = sqlite3_step(st);
	sqlite3_reset(st);
	if (s != SQLITE_ROW && s != SQLITE_DONE) {
		cm_db_fail(hdb, err, "read definitions");
		return false;
	}
	*exists = s == SQLITE_ROW;
	return true;
}

/* Validates the JSON body; fills r. Returns 0, 1 (answered: unknown definition) or -1 (err). */
static int parse_body(struct hreq *r, struct cm_error *err)
{
	if (r->body_too_big)
		return cm_err_set(err, 413, "payload_too_large", "BODY_TOO_LARGE", NULL, "request body is larger than %d bytes",
				  BODY_MAX);
	struct cm_harpoon_body b;
	if (cm_harpoon_body(r->body.data, r->body.len, r->kind == HK_START, hcfg->publish_address, &b, err) < 0)
		return -1;
	snprintf(r->image, sizeof r->image, "%s", b.image);
	r->ports = b.ports;
	r->lock = b.lock;
	r->lock_deadline = b.lock_timeout > 0 ? cm_monotonic_ms() + (int64_t)(b.lock_timeout * 1000) : 0;
	bool exists = false;
	if (!definition_exists(r->image, err, &exists))
		return -1;
	if (!exists) {
		reply_unknown(r);
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ handlers */

static void do_stop(struct hreq *r)
{
	struct cm_error err = {0};
	if (cm_db_begin(hdb, &err) < 0)
		goto fail;
	static const char *sel = "SELECT state FROM harpoon WHERE image = ?";
	sqlite3_stmt *st = cm_db_stmt(hdb, sel, &err);
	if (!st)
		goto rollback;
	sqlite3_bind_text(st, 1, r->image, -1, SQLITE_STATIC);
	int s = sqlite3_step(st);
	sqlite3_reset(st);
	if (s == SQLITE_DONE) {
		/* nothing handed out: nothing to stop */
		cm_db_commit(hdb, &err);
		reply(r, 204, NULL, NULL);
		return;
	}
	if (s != SQLITE_ROW) {
		cm_db_fail(hdb, &err, "read container state");
		goto rollback;
	}
	struct cm_buf args = {0};
	cm_buf_printf(&args, "{\"image\":\"%s\"}", r->image);
	static const char *up = "UPDATE harpoon SET state = 'stopping', job_id = ?2, updated_at = ?3 WHERE image = ?1";
	int qrc = queue_job(r, "h.stop", cm_buf_str(&args), up, &err);
	cm_buf_free(&args);
	if (qrc == 0)
		return;
	goto fail;
rollback:
	cm_db_rollback(hdb);
fail:
	reply_error(r, &err);
}

static void do_unlock(struct hreq *r)
{
	struct cm_error err = {0};
	if (cm_db_begin(hdb, &err) < 0)
		goto fail;
	static const char *sel = "SELECT id FROM harpoon_locks WHERE image = ? AND state = 'held' ORDER BY id LIMIT 1";
	sqlite3_stmt *st = cm_db_stmt(hdb, sel, &err);
	if (!st)
		goto rollback;
	sqlite3_bind_text(st, 1, r->image, -1, SQLITE_STATIC);
	int s = sqlite3_step(st);
	int64_t id = s == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	if (s != SQLITE_ROW && s != SQLITE_DONE) {
		cm_db_fail(hdb, &err, "lock queue");
		goto rollback;
	}
	if (!id) {
		cm_db_rollback(hdb);
		cm_err_set(&err, 409, "conflict", "NOT_LOCKED", "image", "%s is not locked", r->image);
		goto fail;
	}
	int rc = lock_row_exec("DELETE FROM harpoon_locks WHERE id = ?1", id, NULL, &err);
	struct hreq *w = NULL;
	if (rc == 0)
		w = promote_locked(r->image, &err, &rc);
	if (rc < 0)
		goto rollback;
	if (cm_db_commit(hdb, &err) < 0)
		goto fail;
	/* the holder whose request may still be open no longer holds anything */
	struct hreq *old = find_lock_owner(id);
	if (old) {
		old->lock_id = 0;
		old->lock_held = false;
	}
	reply(r, 204, NULL, NULL);
	if (w) {
		w->lock_held = true;
		w->lock_deadline = 0;
		ensure(w);
	}
	return;
rollback:
	cm_db_rollback(hdb);
fail:
	reply_error(r, &err);
}

void harpoon_shutting_down(void)
{
	if (shutting)
		return;
	shutting = true;
	cm_info("shutting down: waiting start_container calls are answered 503");
	for (struct hreq *r = reqs; r; r = r->next)
		if (r->phase == HP_LOCK || r->phase == HP_JOB)
			reply_shutting(r);
}

int harpoon_pending(void)
{
	int n = 0;
	for (struct hreq *r = reqs; r; r = r->next)
		if (r->phase == HP_REPLY && r->wsi)
			n++;
	return n;
}

static void process(struct hreq *r)
{
	struct cm_error err = {0};
	if (!hdb_ok) {
		cm_err_set(&err, 503, "unavailable", "DATABASE_UNAVAILABLE", NULL, "the database cannot be opened");
		reply_error(r, &err);
		return;
	}
	if (r->kind == HK_SHUTDOWN) {
		/* a service deployed for the REST API is not stopped by an HTTP call */
		const char *on = getenv("CM_SHUTDOWN_ENDPOINT");
		if (!on || strcmp(on, "1")) {
			cm_err_set(&err, 403, "forbidden", "SHUTDOWN_DISABLED", NULL,
				   "GET /shutdown stops the stack only when it serves image definitions (CM_IMAGES) "
				   "or was started as `container-manager serve [FILE][:PORT]`");
			reply_error(r, &err);
			return;
		}
		r->signal_after = !shutting;
		harpoon_shutting_down();
		reply(r, 204, NULL, NULL);
		return;
	}
	int pr = parse_body(r, &err);
	if (pr != 0) {
		if (pr < 0)
			reply_error(r, &err);
		return;
	}
	if (shutting) {
		reply_shutting(r);
		return;
	}
	switch (r->kind) {
	case HK_START:
		if (r->lock)
			take_lock(r);
		else
			ensure(r);
		break;
	case HK_STOP:
		do_stop(r);
		break;
	case HK_UNLOCK:
		do_unlock(r);
		break;
	default:
		break;
	}
}

/* ------------------------------------------------------------------ polling jobs and timeouts */

static void job_ended(int64_t job)
{
	char *result = NULL;
	struct cm_error jerr = {0}, err = {0};
	int ok = cm_job_outcome(hdb, job, &result, &jerr, &err);
	yajl_val v = ok == 1 ? cm_json_parse(result, strlen(result), &err) : NULL;
	for (struct hreq *r = reqs; r; r = r->next) {
		if (r->phase != HP_JOB || r->job_id != job)
			continue;
		if (ok < 0) {
			reply_error(r, &err);
			release_lock(r);
		} else if (ok == 0) {
			reply_error(r, &jerr);
			release_lock(r);
		} else if (r->kind == HK_STOP) {
			reply(r, 204, NULL, NULL);
		} else if (!v) {
			reply_error(r, &err);
			release_lock(r);
		} else {
			yajl_gen g = cm_jg_new();
			if (!g)
				continue;
			yajl_gen_map_open(g);
			cm_jg_str(g, "ports");
			yajl_val ports = cm_json_get(v, "ports");
			if (ports)
				cm_jg_value(g, ports);
			else
				cm_jg_raw(g, "{}");
			cm_jg_str(g, "just_created");
			cm_jg_bool(g, r->initiator);
			cm_jg_kv_str(g, "container_id", cm_json_get_str(v, "container_id"));
			yajl_gen_map_close(g);
			reply(r, 200, "application/json", cm_jg_finish(g));
		}
	}
	if (v)
		yajl_tree_free(v);
	free(result);
}

static void poll_cb(lws_sorted_usec_list_t *sul)
{
	(void)sul;
	int64_t now = cm_monotonic_ms();
	bool more = false;
	/* lock waiters past their lock_timeout leave the queue */
	for (struct hreq *r = reqs; r; r = r->next) {
		if (r->phase != HP_LOCK)
			continue;
		if (r->lock_deadline && now >= r->lock_deadline) {
			struct cm_error err = {0};
			release_lock(r);
			cm_err_set(&err, 408, "timeout", "LOCK_TIMEOUT", "lock_timeout", "%s stayed locked for longer than lock_timeout",
				   r->image);
			reply_error(r, &err);
		} else {
			more = true;
		}
	}
	/* jobs: one look per distinct job */
	static const char *sql = "SELECT status FROM jobs WHERE id = ?";
	for (struct hreq *r = reqs; r; r = r->next) {
		if (r->phase != HP_JOB)
			continue;
		bool first = true;
		for (struct hreq *q = reqs; q != r; q = q->next)
			if (q->phase == HP_JOB && q->job_id == r->job_id)
				first = false;
		if (!first)
			continue;
		struct cm_error err;
		sqlite3_stmt *st = cm_db_stmt(hdb, sql, &err);
		if (!st) {
			more = true;
			break;
		}
		sqlite3_bind_int64(st, 1, r->job_id);
		int s = sqlite3_step(st);
		bool ended = s == SQLITE_ROW && strcmp(cm_col_str(st, 0), "queued") && strcmp(cm_col_str(st, 0), "running");
		sqlite3_reset(st);
		if (ended)
			job_ended(r->job_id); /* answers r and every other waiter of the job */
		else
			more = true;
	}
	if (more)
		lws_sul_schedule(hctx, 0, &poll_sul, poll_cb, POLL_US);
}

static void schedule_poll(void)
{
	lws_sul_schedule(hctx, 0, &poll_sul, poll_cb, POLL_US);
}

/* ------------------------------------------------------------------ lws glue */

static void unlink_req(struct hreq *r)
{
	for (struct hreq **pp = &reqs; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	cm_buf_free(&r->body);
	free(r->ports);
	free(r->resp);
	free(r);
}

static int write_answer(struct hreq *r, struct lws *wsi)
{
	const char *b = r->resp ? r->resp : "";
	size_t blen = r->status == 204 ? 0 : strlen(b);
	int rc = ws_http_reply(wsi, r->status, r->status == 204 ? NULL : r->ctype, b, blen, r->request_id);
	r->phase = HP_DONE;
	audit_req(r);
	if (r->signal_after) {
		/* the stack's supervisor stops everything (and asks the runner to remove the containers) */
		const char *ps = getenv("CM_SERVE_PID");
		pid_t pid = ps ? (pid_t)atol(ps) : getppid();
		if (pid > 1 && kill(pid, SIGTERM) < 0)
			cm_error("shutdown: cannot signal the supervisor %d: %s", (int)pid, strerror(errno));
	}
	if (rc < 0)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int cb_harpoon(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct hreq *r = lws_get_opaque_user_data(wsi);
	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		const char *uri = in ? (const char *)in : "/";
		bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
		bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
		struct hreq *nr = calloc(1, sizeof *nr);
		if (!nr)
			return -1;
		nr->t0 = cm_monotonic_ms();
		nr->wsi = wsi;
		nr->body.limit = BODY_MAX;
		ws_header(wsi, "x-cm-user:", nr->user, sizeof nr->user);
		ws_header(wsi, "x-request-id:", nr->request_id, sizeof nr->request_id);
		ws_header(wsi, "x-cm-remote-addr:", nr->remote, sizeof nr->remote);
		if (!nr->request_id[0])
			cm_uuid4(nr->request_id);
		snprintf(nr->path, sizeof nr->path, "%.60s", uri);
		nr->next = reqs;
		reqs = nr;
		lws_set_opaque_user_data(wsi, nr);
		/* held open as long as it takes (a build, a lock); nginx bounds it */
		lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
		struct cm_error err = {0};
		bool want_post = true;
		/* only nginx knows the secret (any www-data process can open the socket) */
		if (!ws_proxy_trusted(wsi)) {
			nr->user[0] = '\0';
			cm_err_set(&err, 401, "auth_error", "UNTRUSTED_PROXY", NULL,
				   "the request did not come through this stack's nginx");
		} else if (!strcmp(uri, "/start_container"))
			nr->kind = HK_START;
		else if (!strcmp(uri, "/stop_container"))
			nr->kind = HK_STOP;
		else if (!strcmp(uri, "/unlock_container"))
			nr->kind = HK_UNLOCK;
		else if (!strcmp(uri, "/shutdown")) {
			nr->kind = HK_SHUTDOWN;
			want_post = false;
		} else
			cm_err_set(&err, 404, "not_found", "ROUTE_NOT_FOUND", NULL, "no such endpoint");
		if (!err.status && !nr->user[0])
			cm_err_set(&err, 401, "auth_error", "AUTH_REQUIRED", NULL, "Authentication required");
		/* (fills err: 421 or 403) */
		if (!err.status && ws_site_check(wsi, hcfg, post ? "POST" : get ? "GET" : "OTHER", uri, false, &err) < 0)
			cm_debug("harpoon: %s refused: %s", uri, err.code);
		if (!err.status && want_post && !post)
			cm_err_set(&err, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", NULL, "%s takes POST with a JSON body", uri);
		if (!err.status && !want_post && !get)
			cm_err_set(&err, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", NULL, "%s takes GET", uri);
		if (err.status) {
			reply_error(nr, &err);
			return 0;
		}
		char cl[24] = "";
		if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) < 0)
			cl[0] = '\0';
		if (!post || !cl[0] || !strcmp(cl, "0"))
			process(nr); /* no body follows */
		return 0;
	}
	case LWS_CALLBACK_HTTP_BODY:
		if (r && r->phase == HP_BODY && !r->body_too_big && cm_buf_append(&r->body, in, len) < 0)
			r->body_too_big = true;
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (r && r->phase == HP_BODY)
			process(r);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (r && r->phase == HP_REPLY)
			return write_answer(r, wsi);
		return 0;
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_WSI_DESTROY:
		if (r) {
			lws_set_opaque_user_data(wsi, NULL);
			r->wsi = NULL;
			if (r->phase != HP_DONE) {
				/* the client left: a queued waiter leaves the queue; a lock it held without
				 * having been answered passes on (it must not swallow an unlock) */
				release_lock(r);
				if (r->phase != HP_REPLY)
					r->status = 499;
				snprintf(r->error_code, sizeof r->error_code, "CLIENT_GONE");
				audit_req(r);
			}
			unlink_req(r);
		}
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols harpoon_protocols[] = {
	{"cm-harpoon", cb_harpoon, 0, 65536, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

int harpoon_setup(struct lws_context *ctx, const struct cm_config *cfg, struct cm_db *db, bool db_ok, const char *sock,
		  unsigned gid)
{
	hctx = ctx;
	hcfg = cfg;
	hdb = db;
	hdb_ok = db_ok;
	if (cm_pathf(runner_sock, sizeof runner_sock, "%s/runner.sock", cfg->run_dir) < 0)
		return -1;
	if (db_ok) {
		/* waiters of an earlier helper process are gone with it; holders keep their lock */
		struct cm_error err;
		if (cm_db_exec(db, "DELETE FROM harpoon_locks WHERE state = 'waiting'", &err) < 0)
			cm_warn("lock queue not cleaned: %s", err.message);
	}
	unlink(sock);
	struct lws_context_creation_info vi;
	memset(&vi, 0, sizeof vi);
	vi.options = LWS_SERVER_OPTION_UNIX_SOCK;
	vi.iface = sock;
	vi.port = 0;
	vi.protocols = harpoon_protocols;
	vi.vhost_name = "harpoon";
	vi.max_http_header_data = 8192;
	vi.keepalive_timeout = 65;
	vi.timeout_secs = 30;
	if (!lws_create_vhost(ctx, &vi)) {
		cm_error("cannot listen on %s", sock);
		return -1;
	}
	if (chown(sock, 0, (gid_t)gid) < 0 || chmod(sock, 0660) < 0) {
		cm_error("cannot give %s to the web server's group: %s", sock, strerror(errno));
		return -1;
	}
	return 0;
}
