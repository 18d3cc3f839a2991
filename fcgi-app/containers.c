/* containers.c: the /containers resource. Reads come from SQLite; every change is a job
 * for the runner, queued in one short write transaction and awaited. */
#include "config.h"
#include "app.h"
#include "spec.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LIST_DEFAULT 50
#define LIST_MAX 500

static const char *const known_status[] = {"creating", "created", "running", "paused", "restarting",
					   "exited", "dead", "removing"};

/* Validates the {cuid} path parameter; answers 400 itself when it is malformed. */
const char *cm_path_cuid(struct cm_req *r)
{
	const char *c = r->params[0];
	if (!cm_valid_cuid(c)) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_CUID", "cuid",
				  "'%.40s' is not a container id (c followed by a UUID)",
				  cm_valid_utf8(c, strlen(c)) ? c : "?");
		return NULL;
	}
	snprintf(r->cuid, sizeof r->cuid, "%s", c);
	return c;
}


struct waiter {
	struct cm_app *app;
	int64_t free_end;  /* monotonic ms: waiting is free until then */
	int64_t grace_end; /* monotonic ms: a busy slot is enough until then */
	int busy;          /* the busy slot's fd, or -1 */
	int slot;          /* the waiter slot's fd, or -1 */
};

/* Whether a synchronous request may keep waiting: freely for its first second, then with a
 * busy slot, past SYNC_WAIT_GRACE only with a waiter slot as well (app.h). */
static bool waiter_go_on(void *ud)
{
	struct waiter *w = ud;
	int64_t now = cm_monotonic_ms();
	if (now < w->free_end)
		return true;
	if (w->busy < 0 && (w->busy = cm_hold_slot(w->app, CM_HOLD_BUSY)) < 0)
		return false;
	if (w->slot >= 0 || now < w->grace_end)
		return true;
	w->slot = cm_hold_slot(w->app, CM_HOLD_WAIT);
	return w->slot >= 0;
}

/* Queues a job (plus whatever pre does in the same transaction), waits for it and
 * returns 1 with *result on success; on failure answers the error itself and returns -1.
 * Returns 0 when it answered 202 with the job: asked to run in the background, or the job
 * outlived JOB_TIMEOUT. */
int cm_run_job(struct cm_req *r, const char *kind, const char *cuid, const char *args, long extra_wait,
		   pre_insert_fn pre, void *ctx, char **result)
{
	struct cm_app *app = r->app;
	struct cm_error err = {0};
	if (cm_db_begin(&app->db, &err) < 0)
		goto fail;
	if (pre && pre(&app->db, ctx, &err) < 0) {
		cm_db_rollback(&app->db);
		r->cuid[0] = '\0'; /* nothing was queued: the answer names no container */
		goto fail;
	}
	int64_t id = cm_job_insert(&app->db, kind, cuid, args, r->request_id, r->user, &err);
	if (id < 0) {
		cm_db_rollback(&app->db);
		goto fail;
	}
	if (cm_db_commit(&app->db, &err) < 0)
		goto fail;
	r->job_id = id;
	if (r->async) {
		cm_job_poke(app->runner_sock, id);
		cm_respond_job_accepted(r, id);
		return 0;
	}
	/* The first second is free; then the wait holds a busy slot (quick changes, even on a
	 * loaded host, answer as they always did while a quarter of the workers stay free), past
	 * SYNC_WAIT_GRACE a waiter slot as well; without one the answer is 202 with the job, which
	 * carries on. */
	int64_t now = cm_monotonic_ms();
	struct waiter w = {app, now + CM_WAIT_FREE_MS, now + app->cfg.sync_wait_grace * 1000, -1, -1};
	int wrc = cm_job_wait_while(&app->db, app->runner_sock, id, app->cfg.job_timeout + extra_wait, waiter_go_on, &w,
				    &err);
	if (w.busy >= 0)
		close(w.busy);
	if (w.slot >= 0)
		close(w.slot);
	if (wrc < 0) {
		/* it outlived the wait: it carries on in the background, and the answer says where */
		if (err.status == 408 && !strcmp(err.code, "JOB_TIMEOUT")) {
			cm_respond_job_accepted(r, id);
			return 0;
		}
		goto fail;
	}
	struct cm_error job_err = {0};
	int ok = cm_job_outcome(&app->db, id, result, &job_err, &err);
	if (ok < 0)
		goto fail;
	if (!ok) {
		cm_respond_error(r, &job_err, NULL);
		return -1;
	}
	return 1;
fail:
	cm_respond_error(r, &err, NULL);
	return -1;
}

/* Steps to cuid's row (CM_CONTAINER_COLS); answers 404 or the database error itself and
 * returns NULL when there is none. The caller resets the statement. */
static sqlite3_stmt *container_row(struct cm_req *r, const char *cuid)
{
	static const char *sql = "SELECT " CM_CONTAINER_COLS " FROM containers WHERE cuid = ?";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return NULL;
	}
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return st;
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		cm_respond_errorf(r, 404, "not_found", "CONTAINER_NOT_FOUND", "cuid", "container %s not found", cuid);
	else
		cm_respond_error(r, (cm_db_fail(&r->app->db, &err, "read container"), &err), NULL);
	return NULL;
}

/* Answers with the container row (status code given), ETag and optional Location. */
static void respond_container(struct cm_req *r, const char *cuid, int status, bool location)
{
	sqlite3_stmt *st = container_row(r, cuid);
	if (!st)
		return;
	yajl_gen g = cm_jg_new();
	cm_store_emit_container(g, st);
	char hdr[256];
	int n = snprintf(hdr, sizeof hdr, "ETag: \"%lld\"\r\n", (long long)sqlite3_column_int64(st, CC_VERSION));
	if (location)
		snprintf(hdr + n, sizeof hdr - (size_t)n, "Location: /containers/%s\r\n", cuid);
	sqlite3_reset(st);
	char *body = cm_jg_finish(g);
	if (!body) {
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		return;
	}
	cm_respond_json(r, status, hdr, body);
	free(body);
}

struct create_ctx {
	const char *cuid;
	struct cm_spec *spec;
	const char *user;
	long max_containers;
};

static int insert_container(struct cm_db *db, void *vctx, struct cm_error *err)
{
	static const char *ins = "INSERT INTO containers(cuid, image, command, env, tags, cpus, memory, pids, "
				 "ports, status, created_at, updated_at, owner, volumes) "
				 "VALUES (?,?,?,?,?,?,?,?,?,'creating',?,?,?,?)";
	static const char *tag = "INSERT INTO container_tags(tag, seq) SELECT value, ? FROM json_each(?)";
	struct create_ctx *c = vctx;
	/* counted in the transaction that inserts the row: racing creates cannot both take the last slot */
	if (cm_container_quota(db, c->max_containers, NULL, err) < 0)
		return -1;
	sqlite3_stmt *st = cm_db_stmt(db, ins, err);
	if (!st)
		return -1;
	int64_t now = cm_now_ms();
	sqlite3_bind_text(st, 1, c->cuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, c->spec->image, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, c->spec->command, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, c->spec->env, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, c->spec->tags, -1, SQLITE_STATIC);
	if (c->spec->cpus > 0)
		sqlite3_bind_double(st, 6, c->spec->cpus);
	sqlite3_bind_int64(st, 7, c->spec->memory);
	sqlite3_bind_int64(st, 8, c->spec->pids);
	sqlite3_bind_text(st, 9, c->spec->ports, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 10, now);
	sqlite3_bind_int64(st, 11, now);
	sqlite3_bind_text(st, 12, c->user, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 13, c->spec->volumes ? c->spec->volumes : "[]", -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return cm_db_fail(db, err, "insert container");
	int64_t seq = sqlite3_last_insert_rowid(db->h);
	st = cm_db_stmt(db, tag, err);
	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, seq);
	sqlite3_bind_text(st, 2, c->spec->tags, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return cm_db_fail(db, err, "insert tags");
	return 0;
}

void h_containers_create(struct cm_req *r)
{
	struct cm_error err = {0};
	yajl_val req = cm_req_json(r, false, &err);
	if (!req) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	struct cm_spec spec;
	int rc = cm_spec_from_create(&r->app->cfg, req, &spec, &err);
	yajl_tree_free(req);
	if (rc < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (cm_dry_run(r)) {
		cm_spec_free(&spec);
		return;
	}
	char cuid[38];
	if (cm_new_cuid(cuid) < 0) {
		cm_spec_free(&spec);
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "no randomness available");
		return;
	}
	snprintf(r->cuid, sizeof r->cuid, "%s", cuid);
	struct create_ctx ctx = {cuid, &spec, r->user, r->app->cfg.max_containers};
	char *result = NULL;
	rc = cm_run_job(r, "create", cuid, "{}", 0, insert_container, &ctx, &result);
	cm_spec_free(&spec);
	free(result);
	if (rc > 0)
		respond_container(r, cuid, 201, true);
}

/* ---- listing and cursors ---- */

uint32_t cm_filter_hash(const char *a, const char *b)
{
	uint32_t h = 2166136261u;
	for (const char *p = a ? a : ""; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ '|') * 16777619u;
	for (const char *p = b ? b : ""; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h;
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Cursor token: base64url(seq | expires | filter hash | HMAC-SHA256[0..16)). Stateless, so a
 * cursor from one worker works on every other; the key lives in SQLite (settings). */
void cm_cursor_encode(struct cm_app *app, const struct cm_cursor *c, char out[64])
{
	unsigned char raw[36];
	put64(raw, (uint64_t)c->seq);
	put64(raw + 8, (uint64_t)c->expires);
	raw[16] = (unsigned char)(c->filter >> 24);
	raw[17] = (unsigned char)(c->filter >> 16);
	raw[18] = (unsigned char)(c->filter >> 8);
	raw[19] = (unsigned char)c->filter;
	unsigned char mac[32];
	cm_hmac_sha256(app->cursor_key, sizeof app->cursor_key, raw, 20, mac);
	memcpy(raw + 20, mac, 16);
	cm_b64url_encode(out, raw, sizeof raw);
}

int cm_cursor_decode(struct cm_app *app, const char *tok, struct cm_cursor *c, struct cm_error *err)
{
	unsigned char raw[40];
	if (strlen(tok) != 48 || cm_b64url_decode(raw, sizeof raw, tok) != 36)
		return cm_err_validation(err, "INVALID_CURSOR", "cursor", "cursor is malformed");
	unsigned char mac[32];
	cm_hmac_sha256(app->cursor_key, sizeof app->cursor_key, raw, 20, mac);
	if (!cm_consttime_eq(mac, raw + 20, 16))
		return cm_err_validation(err, "INVALID_CURSOR", "cursor", "cursor is not valid");
	c->seq = (int64_t)get64(raw);
	c->expires = (int64_t)get64(raw + 8);
	c->filter = ((uint32_t)raw[16] << 24) | ((uint32_t)raw[17] << 16) | ((uint32_t)raw[18] << 8) | raw[19];
	if (c->expires < cm_now_ms() / 1000)
		return cm_err_set(err, 410, "gone", "CURSOR_EXPIRED", "cursor", "cursor has expired; start the listing again");
	return 0;
}

int cm_status_filter(const char *s, const char *const *known, size_t nknown, char *out, size_t outsz,
		     struct cm_error *err)
{
	bool want[16] = {false};
	char tmp[256], names[200] = "";
	if (nknown > CM_ARRAY_LEN(want))
		return cm_err_internal(err, "too many statuses");
	for (size_t i = 0, o = 0; i < nknown && o < sizeof names; i++)
		o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "", known[i]);
	if (strlen(s) >= sizeof tmp)
		return cm_err_validation(err, "INVALID_VALUE", "status", "status filter is too long");
	snprintf(tmp, sizeof tmp, "%s", s);
	char *save = NULL;
	int count = 0;
	for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save), count++) {
		bool found = false;
		for (size_t i = 0; i < nknown; i++)
			if (!strcmp(t, known[i]))
				found = want[i] = true;
		if (!found)
			return cm_err_validation(err, "INVALID_VALUE", "status", "unknown status '%.32s' (one of %s)",
						 cm_valid_utf8(t, strlen(t)) ? t : "?", names);
	}
	if (!count)
		return cm_err_validation(err, "INVALID_VALUE", "status", "status filter is empty");
	size_t o = (size_t)snprintf(out, outsz, "[");
	int n = 0;
	for (size_t i = 0; i < nknown && o < outsz; i++)
		if (want[i])
			o += (size_t)snprintf(out + o, outsz - o, "%s\"%s\"", n++ ? "," : "", known[i]);
	if (o < outsz)
		snprintf(out + o, outsz - o, "]");
	return 0;
}

int cm_page_cursor(struct cm_req *r, const char *token, uint32_t filter, struct cm_cursor *c)
{
	struct cm_error err = {0};
	c->seq = INT64_MAX;
	if (!token)
		return 0;
	if (cm_cursor_decode(r->app, token, c, &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return -1;
	}
	if (c->filter != filter) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_CURSOR", "cursor", "cursor was issued for other filters");
		return -1;
	}
	return 0;
}

void cm_respond_page(struct cm_req *r, sqlite3_stmt *st, const char *key, long limit, int seq_col, uint32_t filter,
		     void (*emit)(yajl_gen, sqlite3_stmt *))
{
	struct cm_app *app = r->app;
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_str(g, key);
	yajl_gen_array_open(g);
	long n = 0;
	int64_t last_seq = 0;
	bool more = false;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == limit) {
			more = true;
			break;
		}
		emit(g, st);
		last_seq = sqlite3_column_int64(st, seq_col);
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		struct cm_error err = {0};
		yajl_gen_free(g);
		cm_db_fail(&app->db, &err, "list");
		cm_respond_error(r, &err, NULL);
		return;
	}
	yajl_gen_array_close(g);
	cm_jg_str(g, "next_cursor");
	if (more) {
		struct cm_cursor next = {last_seq, cm_now_ms() / 1000 + app->cfg.cursor_ttl, filter};
		char tok[64];
		cm_cursor_encode(app, &next, tok);
		cm_jg_str(g, tok);
	} else {
		cm_jg_null(g);
	}
	yajl_gen_map_close(g);
	cm_respond_gen(r, 200, g);
}

static void emit_container_row(yajl_gen g, sqlite3_stmt *st)
{
	cm_store_emit_container(g, st);
}

void h_containers_list(struct cm_req *r)
{
	static const char *q_all = "SELECT " CM_CONTAINER_COLS " FROM containers WHERE seq < ?1 "
				   "ORDER BY seq DESC LIMIT ?3";
	static const char *q_status = "SELECT " CM_CONTAINER_COLS " FROM containers WHERE seq < ?1 AND status IN "
				      "(SELECT value FROM json_each(?2)) ORDER BY seq DESC LIMIT ?3";
	/* tag pages walk the (tag, seq) index backwards and stop after limit+1 rows */
	static const char *q_tag = "SELECT " CM_CONTAINER_COLS " FROM (SELECT seq AS tseq FROM container_tags "
				   "WHERE tag = ?4 AND seq < ?1 ORDER BY seq DESC LIMIT ?3) JOIN containers ON "
				   "containers.seq = tseq ORDER BY tseq DESC";
	static const char *q_both = "SELECT " CM_CONTAINER_COLS " FROM (SELECT seq AS tseq FROM container_tags "
				    "WHERE tag = ?4 AND seq < ?1) JOIN containers ON containers.seq = tseq WHERE status IN "
				    "(SELECT value FROM json_each(?2)) ORDER BY tseq DESC LIMIT ?3";
	struct cm_app *app = r->app;
	struct cm_error err = {0};
	const char *status = cm_req_query(r, "status");
	const char *tag = cm_req_query(r, "tag");
	const char *lim = cm_req_query(r, "limit");
	const char *cur = cm_req_query(r, "cursor");
	long limit = LIST_DEFAULT;
	if (lim) {
		char *end;
		errno = 0;
		limit = strtol(lim, &end, 10);
		if (errno || !*lim || *end || limit < 1 || limit > LIST_MAX) {
			cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "limit",
					  "limit must be an integer from 1 to %d", LIST_MAX);
			return;
		}
	}
	char statuses[512] = "";
	if (status && cm_status_filter(status, known_status, CM_ARRAY_LEN(known_status), statuses, sizeof statuses, &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (tag && !cm_spec_valid_tag(tag)) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "tag", "tag must be one tag: 1-64 letters, digits or _.:/- starting with a letter or digit");
		return;
	}
	uint32_t filter = cm_filter_hash(status ? statuses : NULL, tag); /* canonical: sorted, no duplicates */
	struct cm_cursor c;
	if (cm_page_cursor(r, cur, filter, &c) < 0)
		return;
	const char *sql = status ? (tag ? q_both : q_status) : (tag ? q_tag : q_all);
	sqlite3_stmt *st = cm_db_stmt(&app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	sqlite3_bind_int64(st, 1, c.seq);
	if (status)
		sqlite3_bind_text(st, 2, statuses, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, limit + 1);
	if (tag)
		sqlite3_bind_text(st, 4, tag, -1, SQLITE_STATIC);
	cm_respond_page(r, st, "containers", limit, CC_SEQ, filter, emit_container_row);
}

void h_container_get(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (cuid)
		respond_container(r, cuid, 200, false);
}

void h_container_status(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	sqlite3_stmt *st = cuid ? container_row(r, cuid) : NULL;
	if (!st)
		return;
	yajl_gen g = cm_jg_new();
	cm_store_emit_status(g, st);
	sqlite3_reset(st);
	cm_respond_gen(r, 200, g);
}

/* Reads an ETag value ("12", W/"12" or 12) from If-Match; -1 if absent, -2 if "*". */
static int64_t if_match(struct cm_req *r)
{
	const char *h = cm_req_header(r, "HTTP_IF_MATCH");
	if (!h || !*h)
		return -1;
	while (*h == ' ')
		h++;
	if (!strcmp(h, "*"))
		return -2;
	if (!strncmp(h, "W/", 2))
		h += 2;
	if (*h == '"')
		h++;
	char *end;
	long long v = strtoll(h, &end, 10);
	if (end == h)
		return 0; /* never matches */
	return v;
}

void h_container_patch(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid)
		return;
	struct cm_error err = {0};
	yajl_val patch = cm_req_json(r, false, &err);
	if (!patch) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	struct cm_spec spec;
	int64_t version;
	char status[16];
	if (cm_store_load_spec(&r->app->db, cuid, &spec, &version, status, sizeof status, &err) < 0) {
		yajl_tree_free(patch);
		cm_respond_error(r, &err, NULL);
		return;
	}
	int64_t want = if_match(r);
	if (want != -1 && want != -2 && want != version) {
		yajl_tree_free(patch);
		cm_spec_free(&spec);
		cm_respond_errorf(r, 412, "precondition_failed", "PRECONDITION_FAILED", "If-Match",
				  "container has changed (current ETag \"%lld\")", (long long)version);
		return;
	}
	/* validated here for a quick answer; the runner applies the same patch again to the
	 * spec as it is when the job runs, so concurrent PATCHes never undo each other */
	unsigned changed = 0;
	int rc = cm_spec_apply_patch(&r->app->cfg, &spec, patch, &changed, &err);
	cm_spec_free(&spec);
	if (rc < 0) {
		yajl_tree_free(patch);
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (cm_dry_run(r)) {
		yajl_tree_free(patch);
		return;
	}
	if (!changed) {
		yajl_tree_free(patch);
		respond_container(r, cuid, 200, false);
		return;
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_int(g, "if_match", want >= 0 ? want : -1);
	cm_jg_str(g, "patch");
	cm_jg_value(g, patch);
	yajl_gen_map_close(g);
	yajl_tree_free(patch);
	char *args = cm_jg_finish(g);
	if (!args) {
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		return;
	}
	char *result = NULL;
	rc = cm_run_job(r, "update", cuid, args, 60, NULL, NULL, &result);
	free(args);
	free(result);
	if (rc > 0)
		respond_container(r, cuid, 200, false);
}

/* Checks the container exists (404 otherwise) before a job is queued for it. */
bool cm_container_exists(struct cm_req *r, const char *cuid)
{
	static const char *sql = "SELECT 1 FROM containers WHERE cuid = ?";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return false;
	}
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return true;
	if (rc == SQLITE_DONE)
		cm_respond_errorf(r, 404, "not_found", "CONTAINER_NOT_FOUND", "cuid", "container %s not found", cuid);
	else
		cm_respond_error(r, (cm_db_fail(&r->app->db, &err, "read container"), &err), NULL);
	return false;
}

void h_container_delete(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid || !cm_container_exists(r, cuid))
		return;
	const char *kf = cm_req_query(r, "keep_files");
	bool keep = false;
	if (kf) {
		if (!strcmp(kf, "true") || !strcmp(kf, "1"))
			keep = true;
		else if (strcmp(kf, "false") && strcmp(kf, "0")) {
			cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "keep_files",
					  "keep_files must be true or false");
			return;
		}
	}
	char *result = NULL;
	int rc = cm_run_job(r, "delete", cuid, keep ? "{\"keep_files\":true}" : "{\"keep_files\":false}", 30, NULL,
			 NULL, &result);
	free(result);
	if (rc > 0)
		cm_respond(r, 204, NULL, NULL, NULL, 0);
}

void h_container_action(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid)
		return;
	const char *action = strrchr(r->path, '/') + 1;
	struct cm_error err = {0};
	long timeout = -1;
	const char *tq = cm_req_query(r, "timeout");
	yajl_val body = cm_req_json(r, true, &err);
	if (!body && err.status) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (body) {
		if (!YAJL_IS_OBJECT(body)) {
			yajl_tree_free(body);
			cm_respond_errorf(r, 400, "validation_error", "INVALID_TYPE", NULL, "request body must be a JSON object");
			return;
		}
		for (size_t i = 0; i < body->u.object.len; i++) {
			const char *k = body->u.object.keys[i];
			yajl_val v = body->u.object.values[i];
			if (!strcmp(k, "timeout") && (!strcmp(action, "stop") || !strcmp(action, "restart"))) {
				if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0 || YAJL_GET_INTEGER(v) > 600) {
					yajl_tree_free(body);
					cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "timeout",
							  "timeout must be an integer number of seconds from 0 to 600");
					return;
				}
				timeout = (long)YAJL_GET_INTEGER(v);
			} else {
				char f[80];
				snprintf(f, sizeof f, "%.64s", k);
				yajl_tree_free(body);
				cm_respond_errorf(r, 400, "validation_error", "UNKNOWN_FIELD", f, "unknown field %s", f);
				return;
			}
		}
		yajl_tree_free(body);
	}
	if (tq) {
		char *end;
		errno = 0;
		long t = strtol(tq, &end, 10);
		if (errno || !*tq || *end || t < 0 || t > 600 || (strcmp(action, "stop") && strcmp(action, "restart"))) {
			cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "timeout",
					  "timeout must be an integer number of seconds from 0 to 600 (stop and restart only)");
			return;
		}
		timeout = t;
	}
	if (!cm_container_exists(r, cuid))
		return;
	char args[64];
	snprintf(args, sizeof args, "{\"timeout\":%ld}", timeout);
	char *result = NULL;
	if (cm_run_job(r, action, cuid, args, timeout > 0 ? timeout : 10, NULL, NULL, &result) > 0)
		cm_respond_json(r, 200, NULL, result);
	free(result);
}

void h_container_ports(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid)
		return;
	struct cm_error err = {0};
	yajl_val body = cm_req_json(r, false, &err);
	if (!body) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	char *ports = NULL;
	int rc = -1;
	if (!YAJL_IS_OBJECT(body)) {
		cm_err_validation(&err, "INVALID_TYPE", NULL, "request body must be a JSON object");
	} else {
		rc = 0;
		for (size_t i = 0; i < body->u.object.len && rc == 0; i++)
			if (strcmp(body->u.object.keys[i], "ports"))
				rc = cm_err_validation(&err, "UNKNOWN_FIELD", body->u.object.keys[i], "unknown field %.64s",
						       body->u.object.keys[i]);
		yajl_val pv = cm_json_get(body, "ports");
		if (rc == 0 && !pv)
			rc = cm_err_validation(&err, "MISSING_FIELD", "ports", "ports is required");
		if (rc == 0)
			rc = cm_spec_ports(pv, &ports, &err);
	}
	yajl_tree_free(body);
	if (rc < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (!cm_container_exists(r, cuid) || cm_dry_run(r)) {
		free(ports);
		return;
	}
	struct cm_buf args = {0};
	cm_buf_printf(&args, "{\"ports\":%s}", ports);
	free(ports);
	char *result = NULL;
	if (cm_run_job(r, "ports", cuid, cm_buf_str(&args), 60, NULL, NULL, &result) > 0)
		cm_respond_json(r, 200, NULL, result);
	free(result);
	cm_buf_free(&args);
}
