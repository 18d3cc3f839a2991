/* apps.c: /apps — containers built from source (or run from a local image), health-checked by
 * the runner and reverse-proxied by nginx at /apps/{name}/ (seed 001, OpenRun's container
 * plugin, as REST).
 *
 * The source arrives like a build context (images.c): a zip/tar body with the fields as query
 * parameters, or multipart/form-data with a "source" file part and the fields as a "spec" JSON
 * part and/or as plain form fields (curl -F name=web -F source=@src.zip); an image:REF app
 * may send its spec as a JSON body. Each field may be given once per request. Everything is checked before a job is
 * queued, so bad input leaves no row, image or container. The route's gate (GET /_appauth,
 * nginx's auth_request) reads the app's row per request: the runner updates it only once a
 * container is healthy, which makes a rebuild's swap atomic. */
#include "config.h"
#include "app.h"
#include "buildctx.h"
#include "multipart.h"
#include "spec.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define APP_BUILD_WAIT 600 /* a synchronous create/update waits JOB_TIMEOUT + this, then answers 202 */
#define APP_RUN_WAIT 300

enum { F_NAME = 1, F_SRC = 2, F_PORT = 4, F_SCHEME = 8, F_HEALTH = 16, F_LIFETIME = 32, F_BUILD_DIR = 64, F_USER = 128 };

struct app_spec {
	char name[64];
	char src[1040];  /* auto | image:REF | a container file name */
	long port;       /* 0: the image's EXPOSE */
	char scheme[8];
	char health[520];
	char lifetime[10];
	char build_dir[1024]; /* "" = the root */
	char user[64];        /* uid[:gid] the containers run as ("" = APP_USER_UID) */
	unsigned given;
};

static void spec_defaults(struct app_spec *s)
{
	memset(s, 0, sizeof *s);
	snprintf(s->src, sizeof s->src, "auto");
	snprintf(s->scheme, sizeof s->scheme, "http");
	snprintf(s->health, sizeof s->health, "/");
	snprintf(s->lifetime, sizeof s->lifetime, "service");
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* One field, from a query parameter (text) or the JSON spec (text or, for port, a number). */
static int spec_set(struct app_spec *s, const char *key, const char *text, const long long *num, struct cm_error *err)
{
	static const struct {
		const char *key;
		unsigned bit;
	} bits[] = {{"name", F_NAME}, {"src", F_SRC}, {"port", F_PORT}, {"scheme", F_SCHEME},
		    {"health", F_HEALTH}, {"lifetime", F_LIFETIME}, {"build_dir", F_BUILD_DIR}};
	for (size_t i = 0; i < CM_ARRAY_LEN(bits); i++)
		if (!strcmp(key, bits[i].key) && (s->given & bits[i].bit))
			return cm_err_validation(err, "DUPLICATE_FIELD", key,
						 "%s is given more than once (the query, the spec part and the form fields "
						 "together may name each field once)", key);
	if (!strcmp(key, "port")) {
		long long v = 0;
		char *end = NULL;
		if (num) {
			v = *num;
		} else if (!text || !*text || (v = strtoll(text, &end, 10), *end)) {
			return cm_err_validation(err, "INVALID_VALUE", "port", "port must be a number from 0 to 65535");
		}
		if (v < 0 || v > 65535)
			return cm_err_validation(err, "INVALID_VALUE", "port", "port must be a number from 0 to 65535");
		s->port = (long)v;
		s->given |= F_PORT;
		return 0;
	}
	if (!text)
		return cm_err_validation(err, "INVALID_TYPE", key, "%s must be a string", key);
	if (!strcmp(key, "name")) {
		if (!cm_valid_app_name(text))
			return cm_err_validation(err, "INVALID_NAME", "name",
						 "'%.80s' is not an app name (1-63 of a-z, 0-9 and '-', starting with a letter or digit)",
						 cm_valid_utf8(text, strlen(text)) ? text : "?");
		snprintf(s->name, sizeof s->name, "%s", text);
		s->given |= F_NAME;
	} else if (!strcmp(key, "src")) {
		if (!*text || strlen(text) >= 1024 || !printable(text))
			return cm_err_validation(err, "INVALID_VALUE", "src", "src is auto, image:REF or the container file's name");
		if (!strncmp(text, "image:", 6) && !cm_valid_image_ref(text + 6, false))
			return cm_err_validation(err, "INVALID_IMAGE_REF", "src", "'%.80s' is not an image reference", text + 6);
		snprintf(s->src, sizeof s->src, "%s", text);
		s->given |= F_SRC;
	} else if (!strcmp(key, "scheme")) {
		if (strcmp(text, "http") && strcmp(text, "https"))
			return cm_err_validation(err, "INVALID_VALUE", "scheme", "scheme is http or https");
		snprintf(s->scheme, sizeof s->scheme, "%s", text);
		s->given |= F_SCHEME;
	} else if (!strcmp(key, "health")) {
		if (text[0] != '/' || strlen(text) > 512 || !printable(text))
			return cm_err_validation(err, "INVALID_VALUE", "health",
						 "health is a path starting with '/' (at most 512 printable characters)");
		snprintf(s->health, sizeof s->health, "%s", text);
		s->given |= F_HEALTH;
	} else if (!strcmp(key, "lifetime")) {
		if (strcmp(text, "service") && strcmp(text, "command"))
			return cm_err_validation(err, "INVALID_VALUE", "lifetime", "lifetime is service or command");
		snprintf(s->lifetime, sizeof s->lifetime, "%s", text);
		s->given |= F_LIFETIME;
	} else if (!strcmp(key, "user")) {
		/* checked against the settings (root, ALLOW_ROOT_CONTAINERS) once the request is read */
		if (strlen(text) >= sizeof s->user)
			return cm_err_validation(err, "INVALID_VALUE", "user", "user is a numeric uid or uid:gid");
		snprintf(s->user, sizeof s->user, "%s", text);
		s->given |= F_USER;
	} else if (!strcmp(key, "build_dir")) {
		if (strlen(text) >= sizeof s->build_dir || !cm_valid_utf8(text, strlen(text)))
			return cm_err_validation(err, "INVALID_VALUE", "build_dir", "build_dir is a directory of the source");
		while (*text == '/')
			text++;
		snprintf(s->build_dir, sizeof s->build_dir, "%s", text);
		s->given |= F_BUILD_DIR;
	} else {
		return cm_err_validation(err, "UNKNOWN_FIELD", key,
					 "unknown field \"%.64s\" (name, src, port, scheme, health, lifetime, build_dir, user)", key);
	}
	return 0;
}

static const char *const spec_keys[] = {"name", "src", "port", "scheme", "health", "lifetime", "build_dir", "user"};
/* the parts of a form that are fields even when sent as files (-F spec=@spec.json) */
static const char *const form_fields[] = {"spec", "name", "src", "port", "scheme", "health", "lifetime", "build_dir", "user", NULL};

static int spec_from_query(struct cm_req *r, struct app_spec *s, struct cm_error *err)
{
	for (size_t i = 0; i < CM_ARRAY_LEN(spec_keys); i++) {
		const char *v = cm_req_query(r, spec_keys[i]);
		if (v && spec_set(s, spec_keys[i], v, NULL, err) < 0)
			return -1;
	}
	return 0;
}

static int spec_from_json(struct app_spec *s, yajl_val v, struct cm_error *err)
{
	if (!YAJL_IS_OBJECT(v))
		return cm_err_validation(err, "INVALID_TYPE", "spec",
					 "the spec must be an object {name, src, port, scheme, health, lifetime, build_dir, user}");
	for (size_t i = 0; i < v->u.object.len; i++) {
		const char *k = v->u.object.keys[i];
		yajl_val x = v->u.object.values[i];
		if (YAJL_IS_NULL(x))
			continue;
		long long n;
		if (!strcmp(k, "port")) {
			if (!YAJL_IS_INTEGER(x))
				return cm_err_validation(err, "INVALID_TYPE", "port", "port must be an integer");
			n = YAJL_GET_INTEGER(x);
			if (spec_set(s, k, NULL, &n, err) < 0)
				return -1;
		} else if (spec_set(s, k, YAJL_IS_STRING(x) ? YAJL_GET_STRING(x) : NULL, NULL, err) < 0) {
			return -1;
		}
	}
	return 0;
}

/* The plain fields of a multipart body: a JSON "spec" part and/or each field as its own part
 * (typed like the query: port as decimal text). A field given twice, in any two of the query,
 * the spec and a plain part, is refused (spec_set: DUPLICATE_FIELD); so is an unknown part. */
static int spec_from_fields(struct app_spec *s, const struct cm_mp_fields *fields, struct cm_error *err)
{
	for (size_t i = 0; i < fields->n; i++) {
		const struct cm_mp_field *f = &fields->f[i];
		if (!strcmp(f->name, "spec")) {
			yajl_val v = cm_json_parse(f->value, f->len, err);
			if (!v) {
				snprintf(err->field, sizeof err->field, "spec");
				return -1;
			}
			int rc = spec_from_json(s, v, err);
			yajl_tree_free(v);
			if (rc < 0)
				return -1;
			continue;
		}
		bool known = false;
		for (size_t k = 0; k < CM_ARRAY_LEN(spec_keys); k++)
			known |= !strcmp(f->name, spec_keys[k]);
		if (!known) {
			char shown[64];
			cm_log_escape(shown, sizeof shown, f->name);
			return cm_err_validation(err, "UNKNOWN_FIELD", shown,
						 "unknown form field \"%s\" (spec, source, name, src, port, scheme, health, lifetime, user, "
						 "build_dir)", shown);
		}
		if (spec_set(s, f->name, f->value, NULL, err) < 0)
			return -1;
	}
	return 0;
}

/* ---- the app object ---- */

#define APP_COLS                                                                                            \
	"name, src, scheme, health, lifetime, build_dir, port, container_port, image, image_id, generation, " \
	"host_port, status, last_check, last_ok, last_error, failures, restarts, created_at, updated_at, docker_id, user"
enum {
	A_NAME, A_SRC, A_SCHEME, A_HEALTH, A_LIFETIME, A_BUILD_DIR, A_PORT, A_CPORT, A_IMAGE, A_IMAGE_ID, A_GEN,
	A_HOST_PORT, A_STATUS, A_LAST_CHECK, A_LAST_OK, A_LAST_ERROR, A_FAILURES, A_RESTARTS, A_CREATED, A_UPDATED,
	A_DOCKER_ID, A_USER
};

static void kv_time_or_null(yajl_gen g, const char *k, sqlite3_stmt *st, int col)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		cm_jg_str(g, k);
		cm_jg_null(g);
	} else {
		cm_jg_kv_time(g, k, sqlite3_column_int64(st, col));
	}
}

static void emit_app(yajl_gen g, sqlite3_stmt *st)
{
	const char *name = cm_col_str(st, A_NAME);
	bool service = !strcmp(cm_col_str(st, A_LIFETIME) ? cm_col_str(st, A_LIFETIME) : "", "service");
	char url[96];
	snprintf(url, sizeof url, "/apps/%s/", name ? name : "");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "name", name);
	cm_jg_kv_str(g, "url", service ? url : NULL);
	cm_jg_kv_str(g, "status", cm_col_str(st, A_STATUS));
	cm_jg_kv_str(g, "image", cm_col_str(st, A_IMAGE));
	cm_jg_kv_str(g, "image_id", cm_col_str(st, A_IMAGE_ID));
	cm_jg_kv_str(g, "src", cm_col_str(st, A_SRC));
	cm_jg_kv_int(g, "port", sqlite3_column_int64(st, A_CPORT));
	cm_jg_kv_int(g, "port_requested", sqlite3_column_int64(st, A_PORT));
	cm_jg_kv_str(g, "scheme", cm_col_str(st, A_SCHEME));
	cm_jg_kv_str(g, "health", cm_col_str(st, A_HEALTH));
	cm_jg_kv_str(g, "lifetime", cm_col_str(st, A_LIFETIME));
	char bd[1100];
	snprintf(bd, sizeof bd, "/%s", cm_col_str(st, A_BUILD_DIR) ? cm_col_str(st, A_BUILD_DIR) : "");
	cm_jg_kv_str(g, "build_dir", bd);
	cm_jg_kv_int(g, "generation", sqlite3_column_int64(st, A_GEN));
	cm_jg_kv_str(g, "container_id", cm_col_str(st, A_DOCKER_ID));
	const char *user = cm_col_str(st, A_USER);
	cm_jg_kv_str(g, "user", user && *user ? user : NULL); /* null: the APP_USER_UID setting */
	cm_jg_str(g, "health_check");
	yajl_gen_map_open(g);
	kv_time_or_null(g, "last_check", st, A_LAST_CHECK);
	kv_time_or_null(g, "last_ok", st, A_LAST_OK);
	cm_jg_kv_str(g, "last_error", cm_col_str(st, A_LAST_ERROR));
	cm_jg_kv_int(g, "failures", sqlite3_column_int64(st, A_FAILURES));
	yajl_gen_map_close(g);
	cm_jg_kv_int(g, "restarts", sqlite3_column_int64(st, A_RESTARTS));
	kv_time_or_null(g, "created_at", st, A_CREATED);
	kv_time_or_null(g, "updated_at", st, A_UPDATED);
	yajl_gen_map_close(g);
}

/* Steps to name's row; answers 404 APP_NOT_FOUND or the database error itself and returns NULL.
 * The caller resets the statement. */
static sqlite3_stmt *app_row(struct cm_req *r, const char *name)
{
	static const char *sql = "SELECT " APP_COLS " FROM apps WHERE name = ? AND status <> 'deleting'";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return NULL;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return st;
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		cm_respond_errorf(r, 404, "not_found", "APP_NOT_FOUND", "name", "app %s not found", name);
	else
		cm_respond_error(r, (cm_db_fail(&r->app->db, &err, "read app"), &err), NULL);
	return NULL;
}

static void respond_app(struct cm_req *r, const char *name, int status)
{
	sqlite3_stmt *st = app_row(r, name);
	if (!st)
		return;
	yajl_gen g = cm_jg_new();
	emit_app(g, st);
	sqlite3_reset(st);
	char *body = cm_jg_finish(g);
	char loc[128];
	snprintf(loc, sizeof loc, "Location: /apps/%s\r\n", name);
	if (body)
		cm_respond_json(r, status, status == 201 ? loc : NULL, body);
	else
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
	free(body);
}

/* The {name} path parameter, validated (answers 404 itself when it cannot be an app). */
static const char *path_name(struct cm_req *r)
{
	const char *n = r->params[0];
	if (!cm_valid_app_name(n)) {
		cm_respond_errorf(r, 404, "not_found", "APP_NOT_FOUND", "name", "app %.80s not found",
				  cm_valid_utf8(n, strlen(n)) ? n : "?");
		return NULL;
	}
	return n;
}

void h_apps_list(struct cm_req *r)
{
	static const char *sql = "SELECT " APP_COLS " FROM apps WHERE status <> 'deleting' ORDER BY name";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_str(g, "apps");
	yajl_gen_array_open(g);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		emit_app(g, st);
	sqlite3_reset(st);
	yajl_gen_array_close(g);
	yajl_gen_map_close(g);
	if (rc != SQLITE_DONE) {
		yajl_gen_free(g);
		cm_respond_error(r, (cm_db_fail(&r->app->db, &err, "list apps"), &err), NULL);
		return;
	}
	cm_respond_gen(r, 200, g);
}

void h_app_get(struct cm_req *r)
{
	const char *name = path_name(r);
	if (name)
		respond_app(r, name, 200);
}

/* Inside the job's transaction: check_free answers 409 APP_EXISTS when the name has a row or
 * a create on its way; check_exists 404 APP_NOT_FOUND unless the app exists (not deleting). */
static int app_presence(struct cm_db *db, const char *name, bool want, struct cm_error *err)
{
	static const char *sql = "SELECT 1 FROM apps WHERE name = ?1 AND (?2 = 0 OR status <> 'deleting') UNION ALL "
				 "SELECT 1 FROM jobs WHERE ?2 = 0 AND cuid = 'app:' || ?1 AND kind = 'app.create' "
				 "AND status IN ('queued', 'running') LIMIT 1";
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, want);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return cm_db_fail(db, err, "read apps");
	if (want && rc == SQLITE_DONE)
		return cm_err_set(err, 404, "not_found", "APP_NOT_FOUND", "name", "app %s not found", name);
	if (!want && rc == SQLITE_ROW)
		return cm_err_set(err, 409, "conflict", "APP_EXISTS", "name", "an app named %s already exists", name);
	return 0;
}

static int check_free(struct cm_db *db, void *ctx, struct cm_error *err)
{
	return app_presence(db, ctx, false, err);
}

static int check_exists(struct cm_db *db, void *ctx, struct cm_error *err)
{
	return app_presence(db, ctx, true, err);
}

/* A new app is a new container: check_free, then MAX_CONTAINERS (429 CONTAINER_LIMIT_REACHED),
 * counted in the transaction that queues its create job. */
struct new_app {
	const char *name;
	long max_containers;
};

static int check_new_app(struct cm_db *db, void *ctx, struct cm_error *err)
{
	struct new_app *n = ctx;
	if (check_free(db, (void *)n->name, err) < 0)
		return -1;
	return cm_container_quota(db, n->max_containers, NULL, err);
}

/* The lowest tcp port of an image's Config.ExposedPorts ({"8080/tcp": {}}), or 0. */
static long exposed_port(yajl_val image)
{
	yajl_val ep = cm_json_get(cm_json_get(image, "Config"), "ExposedPorts");
	long best = 0;
	for (size_t i = 0; YAJL_IS_OBJECT(ep) && i < ep->u.object.len; i++) {
		const char *k = ep->u.object.keys[i];
		char *end;
		long p = strtol(k, &end, 10);
		if (p > 0 && p < 65536 && !strcmp(end, "/tcp") && (!best || p < best))
			best = p;
	}
	return best;
}

/* Reads the request's spec and source. *staged gets the staged source's name ("" for none);
 * path its path. Answers errors itself and returns -1 (nothing left on disk). */
static int read_input(struct cm_req *r, struct app_spec *s, char name[40], char *path, size_t pathsz)
{
	struct cm_error err = {0};
	const struct cm_config *cfg = &r->app->cfg;
	const char *ct = cm_req_header(r, "CONTENT_TYPE");
	char boundary[80];
	name[0] = path[0] = '\0';
	if (spec_from_query(r, s, &err) < 0)
		goto fail;
	bool multipart = cm_multipart_boundary(ct, boundary, sizeof boundary);
	if (multipart || cm_context_type(ct)) {
		const char *cl = cm_req_header(r, "CONTENT_LENGTH");
		if (cl && *cl && strtoll(cl, NULL, 10) > cfg->upload_max_bytes) {
			cm_err_set(&err, 413, "payload_too_large", "BODY_TOO_LARGE", "body", "the source is larger than %lld bytes",
				   (long long)cfg->upload_max_bytes);
			goto fail;
		}
		if (cm_upload_stage(r, name, path, pathsz, &err) < 0)
			goto fail;
		if (multipart) {
			struct cm_mp_fields fields;
			int rc = cm_multipart_extract(path, boundary, "source", form_fields, &fields, &err);
			if (rc == 1) {
				/* fields and no file: fine for an image:REF app (checked below) */
				unlink(path);
				path[0] = name[0] = '\0';
				rc = 0;
			}
			if (rc == 0)
				rc = spec_from_fields(s, &fields, &err);
			cm_mp_fields_free(&fields);
			if (rc < 0)
				goto fail_nodrain;
		}
		return 0;
	}
	if (!ct || !*ct || !strncasecmp(ct, "application/json", 16)) {
		yajl_val v = cm_req_json(r, true, &err);
		if (!v && err.status)
			goto fail;
		int rc = v ? spec_from_json(s, v, &err) : 0;
		if (v)
			yajl_tree_free(v);
		if (rc < 0)
			goto fail;
		return 0;
	}
	cm_err_validation(&err, "INVALID_CONTENT_TYPE", "Content-Type",
			  "send the source as application/zip or application/x-tar (fields as query parameters), or as "
			  "multipart/form-data with a \"source\" file part and the fields as form fields or a \"spec\" JSON part");
fail:
	cm_req_drain(r);
fail_nodrain:
	if (path[0])
		unlink(path);
	path[0] = name[0] = '\0';
	cm_respond_error(r, &err, NULL);
	return -1;
}

/* Checks what the job will need: the image of an image:REF app and its port, or a container
 * file in the staged source. Fills dockerfile (for a build) or *port_out (resolved port). */
static int check_source(struct cm_req *r, const struct app_spec *s, const char *path, char *dockerfile, size_t dfsz,
			long *port_out, struct cm_error *err)
{
	const struct cm_config *cfg = &r->app->cfg;
	bool service = !strcmp(s->lifetime, "service");
	*port_out = s->port;
	if (!strncmp(s->src, "image:", 6)) {
		struct cm_buf p = {0};
		cm_buf_puts(&p, "/images/");
		cm_buf_urlenc(&p, s->src + 6);
		cm_buf_puts(&p, "/json");
		yajl_val v = NULL;
		long st = cm_app_docker_get(r, cm_buf_str(&p), &v);
		cm_buf_free(&p);
		if (st < 0)
			return -2; /* answered */
		if (st == 404)
			return cm_err_set(err, 404, "not_found", "IMAGE_NOT_FOUND", "src", "image %s is not available locally (no registry is used)",
					  s->src + 6);
		if (st != 200)
			return cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", "src", "Docker answered %ld to the image inspect", st);
		long exp = exposed_port(v);
		yajl_tree_free(v);
		if (!s->port)
			*port_out = exp;
		if (service && !*port_out)
			return cm_err_validation(err, "PORT_REQUIRED", "port", "image %s exposes no tcp port: give the app's port",
						 s->src + 6);
		return 0;
	}
	if (!path[0])
		return cm_err_validation(err, "MISSING_SOURCE", "source",
					 "send the app's source (a zip or tar archive; or src=image:REF for an existing image)");
	struct cm_buildctx b = {.max_unpacked = cfg->upload_max_unpacked, .max_entries = cfg->upload_max_entries};
	if (cm_pathf(b.build_dir, sizeof b.build_dir, "%s", s->build_dir) < 0)
		return cm_err_validation(err, "INVALID_VALUE", "build_dir", "build_dir is too long");
	if (strcmp(s->src, "auto") && cm_pathf(b.dockerfile, sizeof b.dockerfile, "%s", s->src) < 0)
		return cm_err_validation(err, "INVALID_VALUE", "src", "src is too long");
	if (cm_buildctx_scan(path, &b, err) < 0) {
		if (!strcmp(err->field, "dockerfile"))
			snprintf(err->field, sizeof err->field, "src");
		return -1;
	}
	if (cm_pathf(dockerfile, dfsz, "%s", b.dockerfile) < 0)
		return cm_err_validation(err, "INVALID_VALUE", "src", "the Dockerfile's path is too long");
	return 0;
}

static char *job_args(const struct app_spec *s, const char *context, const char *dockerfile, long port)
{
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "name", s->name);
	cm_jg_kv_str(g, "src", s->src);
	cm_jg_kv_int(g, "port", s->port);
	cm_jg_kv_int(g, "resolved_port", port);
	cm_jg_kv_str(g, "scheme", s->scheme);
	cm_jg_kv_str(g, "health", s->health);
	cm_jg_kv_str(g, "lifetime", s->lifetime);
	cm_jg_kv_str(g, "build_dir", s->build_dir);
	cm_jg_kv_str(g, "user", s->user);
	if (!strncmp(s->src, "image:", 6)) {
		cm_jg_kv_str(g, "image", s->src + 6);
	} else {
		cm_jg_kv_str(g, "context", context);
		cm_jg_kv_str(g, "dockerfile", dockerfile);
	}
	yajl_gen_map_close(g);
	return cm_jg_finish(g);
}

/* POST /apps and PUT /apps/{name}: one path, the difference is the check and the job kind. */
static void create_or_update(struct cm_req *r, const char *path_name_or_null)
{
	struct app_spec s;
	spec_defaults(&s);
	bool update = path_name_or_null != NULL;
	struct cm_error err = {0};
	char staged[40], path[PATH_MAX];
	if (update) {
		/* what is not given stays as it was */
		sqlite3_stmt *st = app_row(r, path_name_or_null);
		if (!st) {
			cm_req_drain(r);
			return;
		}
		snprintf(s.name, sizeof s.name, "%s", path_name_or_null);
		snprintf(s.src, sizeof s.src, "%s", cm_col_str(st, A_SRC) ? cm_col_str(st, A_SRC) : "auto");
		snprintf(s.scheme, sizeof s.scheme, "%s", cm_col_str(st, A_SCHEME) ? cm_col_str(st, A_SCHEME) : "http");
		snprintf(s.health, sizeof s.health, "%s", cm_col_str(st, A_HEALTH) ? cm_col_str(st, A_HEALTH) : "/");
		snprintf(s.lifetime, sizeof s.lifetime, "%s", cm_col_str(st, A_LIFETIME) ? cm_col_str(st, A_LIFETIME) : "service");
		snprintf(s.build_dir, sizeof s.build_dir, "%s", cm_col_str(st, A_BUILD_DIR) ? cm_col_str(st, A_BUILD_DIR) : "");
		s.port = (long)sqlite3_column_int64(st, A_PORT);
		snprintf(s.user, sizeof s.user, "%s", cm_col_str(st, A_USER) ? cm_col_str(st, A_USER) : "");
		sqlite3_reset(st);
	} else {
		/* a clash named in the query is refused before the upload is read */
		const char *qn = cm_req_query(r, "name");
		struct new_app qa = {qn, r->app->cfg.max_containers};
		if (qn && cm_valid_app_name(qn) && check_new_app(&r->app->db, &qa, &err) < 0) {
			cm_req_drain(r);
			cm_respond_error(r, &err, NULL);
			return;
		}
	}
	if (read_input(r, &s, staged, path, sizeof path) < 0)
		return;
	if (update && (s.given & F_NAME) && strcmp(s.name, path_name_or_null)) {
		cm_err_validation(&err, "INVALID_VALUE", "name", "an app cannot be renamed (the name in the path is %s)",
				  path_name_or_null);
		goto fail;
	}
	if (!s.name[0]) {
		cm_err_validation(&err, "MISSING_FIELD", "name", "name is required");
		goto fail;
	}
	struct new_app na = {s.name, r->app->cfg.max_containers};
	if (!update && check_new_app(&r->app->db, &na, &err) < 0)
		goto fail;
	if (s.given & F_USER) {
		/* root only where the operator allows it; kept normalized ("" follows APP_USER_UID) */
		char norm[64];
		if (cm_config_container_user(&r->app->cfg, s.user, norm, "user", &err) < 0)
			goto fail;
		snprintf(s.user, sizeof s.user, "%s", s.user[0] ? norm : "");
	}
	char dockerfile[1024] = "";
	long port = 0;
	int crc = check_source(r, &s, path, dockerfile, sizeof dockerfile, &port, &err);
	if (crc == -2) {
		if (path[0])
			unlink(path);
		return;
	}
	if (crc < 0)
		goto fail;
	if (!strncmp(s.src, "image:", 6) && path[0]) {
		unlink(path); /* an image:REF app builds nothing */
		path[0] = staged[0] = '\0';
	}
	char *args = job_args(&s, staged, dockerfile, port);
	char key[80];
	snprintf(key, sizeof key, "app:%s", s.name);
	char *result = NULL;
	int rc = args ? cm_run_job(r, update ? "app.update" : "app.create", key, args, APP_BUILD_WAIT,
				   update ? check_exists : check_new_app, update ? (void *)s.name : (void *)&na, &result)
		      : -1;
	free(args);
	free(result);
	if (rc > 0) {
		respond_app(r, s.name, update ? 200 : 201);
	} else if (rc < 0) {
		if (!r->responded)
			cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		/* queued: the runner removes the staged source; not queued: it is ours to remove */
		if (!r->job_id && path[0])
			unlink(path);
	}
	return;
fail:
	if (path[0])
		unlink(path);
	cm_respond_error(r, &err, NULL);
}

void h_app_create(struct cm_req *r)
{
	create_or_update(r, NULL);
}

void h_app_update(struct cm_req *r)
{
	const char *name = path_name(r);
	if (!name) {
		cm_req_drain(r);
		return;
	}
	char copy[64];
	snprintf(copy, sizeof copy, "%s", name);
	create_or_update(r, copy);
}

void h_app_delete(struct cm_req *r)
{
	const char *name = path_name(r);
	if (!name)
		return;
	char key[80], args[128];
	snprintf(key, sizeof key, "app:%s", name);
	snprintf(args, sizeof args, "{\"name\":\"%s\"}", name);
	char *result = NULL;
	int rc = cm_run_job(r, "app.delete", key, args, 120, check_exists, (void *)name, &result);
	free(result);
	if (rc > 0)
		cm_respond(r, 204, NULL, NULL, NULL, 0);
}

/* POST /apps/{name}/run {command, args, json}: argv in the app's container (non-interactive). */
void h_app_run(struct cm_req *r)
{
	const char *name = path_name(r);
	if (!name)
		return;
	struct cm_error err = {0};
	yajl_val v = cm_req_json(r, false, &err);
	if (!v) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	const char *command = NULL;
	yajl_val argv = NULL;
	bool json = false;
	if (!YAJL_IS_OBJECT(v)) {
		cm_err_validation(&err, "INVALID_TYPE", NULL, "the body must be an object {command, args, json}");
		goto fail;
	}
	for (size_t i = 0; i < v->u.object.len; i++) {
		const char *k = v->u.object.keys[i];
		yajl_val x = v->u.object.values[i];
		if (!strcmp(k, "command")) {
			if (!YAJL_IS_STRING(x) || !*x->u.string || strlen(x->u.string) > 4096) {
				cm_err_validation(&err, "INVALID_VALUE", "command", "command must be a non-empty string (the program)");
				goto fail;
			}
			command = x->u.string;
		} else if (!strcmp(k, "args")) {
			if (YAJL_IS_NULL(x))
				continue;
			bool ok = YAJL_IS_ARRAY(x) && x->u.array.len <= 1024;
			for (size_t j = 0; ok && j < x->u.array.len; j++)
				ok = YAJL_IS_STRING(x->u.array.values[j]) && strlen(x->u.array.values[j]->u.string) <= 65536;
			if (!ok) {
				cm_err_validation(&err, "INVALID_VALUE", "args", "args must be an array of strings");
				goto fail;
			}
			argv = x;
		} else if (!strcmp(k, "json")) {
			if (!YAJL_IS_TRUE(x) && !YAJL_IS_FALSE(x)) {
				cm_err_validation(&err, "INVALID_TYPE", "json", "json must be true or false");
				goto fail;
			}
			json = YAJL_IS_TRUE(x);
		} else {
			cm_err_validation(&err, "UNKNOWN_FIELD", k, "unknown field \"%.64s\" (command, args, json)", k);
			goto fail;
		}
	}
	if (!command) {
		cm_err_validation(&err, "MISSING_FIELD", "command", "command is required");
		goto fail;
	}
	sqlite3_stmt *st = app_row(r, name);
	if (!st) {
		yajl_tree_free(v);
		return;
	}
	sqlite3_reset(st);
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "name", name);
	cm_jg_str(g, "argv");
	yajl_gen_array_open(g);
	cm_jg_str(g, command);
	for (size_t j = 0; argv && j < argv->u.array.len; j++)
		cm_jg_str(g, YAJL_GET_STRING(argv->u.array.values[j]));
	yajl_gen_array_close(g);
	cm_jg_str(g, "json");
	cm_jg_bool(g, json);
	yajl_gen_map_close(g);
	yajl_tree_free(v);
	char *args = cm_jg_finish(g);
	char key[80];
	snprintf(key, sizeof key, "apprun:%s", name);
	char *result = NULL;
	int rc = args ? cm_run_job(r, "app.run", key, args, APP_RUN_WAIT, check_exists, (void *)name, &result) : -1;
	free(args);
	if (rc > 0)
		cm_respond_json(r, 200, NULL, result ? result : "{}");
	else if (rc < 0 && !r->responded)
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
	free(result);
	return;
fail:
	yajl_tree_free(v);
	cm_respond_error(r, &err, NULL);
}

/* GET /_appauth (nginx's auth_request for /apps/{name}/...; the app's name comes as the CM_APP
 * parameter). Credentials were checked before routing. 204 with X-CM-Upstream (the container's
 * bridge address and port, else 127.0.0.1 and its published port) and X-CM-Upstream-Scheme (the
 * app's scheme) when the app is healthy; otherwise 403 (auth_request passes only 401 and 403 on) with X-CM-App-State naming
 * why (unknown, starting, unhealthy), which nginx turns into the 404/503 JSON answer. */
void h_app_gate(struct cm_req *r)
{
	const char *name = cm_req_header(r, "CM_APP");
	const char *uri = cm_req_header(r, "REQUEST_URI");
	if (uri && *uri) {
		/* the audit row names the proxied path, not the sub-request's */
		size_t n = strcspn(uri, "?");
		if (n < sizeof r->path) {
			memcpy(r->path, uri, n);
			r->path[n] = '\0';
		}
	}
	struct cm_error err = {0};
	char hdr[200];
	if (!name || !cm_valid_app_name(name)) {
		cm_err_set(&err, 404, "not_found", "APP_NOT_FOUND", "name", "no such app");
		snprintf(hdr, sizeof hdr, "X-CM-App-State: unknown\r\n");
		err.status = 403;
		cm_respond_error(r, &err, hdr);
		return;
	}
	static const char *sql = "SELECT status, host_port, lifetime, container_ip, container_port, scheme FROM apps "
				 "WHERE name = ?";
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	char status[16] = "", up[96] = "";
	bool service = false, https = false;
	if (rc == SQLITE_ROW) {
		snprintf(status, sizeof status, "%s", cm_col_str(st, 0) ? cm_col_str(st, 0) : "");
		service = cm_col_str(st, 2) && !strcmp(cm_col_str(st, 2), "service");
		https = cm_col_str(st, 5) && !strcmp(cm_col_str(st, 5), "https");
		/* the container's bridge address (no docker-proxy on the way), else its published port */
		const char *ip = cm_col_str(st, 3);
		long long port = sqlite3_column_int64(st, 4), host_port = sqlite3_column_int64(st, 1);
		if (ip && *ip && strlen(ip) < 40 && strspn(ip, "0123456789.") == strlen(ip) && port > 0 && port < 65536)
			snprintf(up, sizeof up, "%s:%lld", ip, port);
		else if (host_port > 0 && host_port < 65536)
			snprintf(up, sizeof up, "127.0.0.1:%lld", host_port);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		cm_respond_error(r, (cm_db_fail(&r->app->db, &err, "read app"), &err), NULL);
		return;
	}
	if (rc == SQLITE_DONE || !service || !strcmp(status, "deleting")) {
		cm_err_set(&err, 403, "not_found", "APP_NOT_FOUND", "name", "no such app: %s", name);
		snprintf(hdr, sizeof hdr, "X-CM-App-State: unknown\r\n");
		cm_respond_error(r, &err, hdr);
		return;
	}
	if (!strcmp(status, "healthy") && up[0]) {
		snprintf(hdr, sizeof hdr, "X-CM-Upstream: %s\r\nX-CM-Upstream-Scheme: %s\r\n", up, https ? "https" : "http");
		cm_respond(r, 204, NULL, hdr, NULL, 0);
		return;
	}
	cm_err_set(&err, 403, "unavailable", "APP_NOT_READY", "name", "app %s is %s", name, status);
	snprintf(hdr, sizeof hdr, "X-CM-App-State: %s\r\n", status[0] ? status : "starting");
	cm_respond_error(r, &err, hdr);
}
