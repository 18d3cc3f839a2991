/* volumes.c: /volumes. Reads ask Docker (volumes are not mirrored in SQLite); create and
 * delete are jobs. A volume a managed container mounts cannot be deleted (409). Only volumes
 * that carry this stack's instance label exist for the API: another stack's volumes, or a
 * volume made with the Docker CLI (which may be a local-driver bind of any host path), are
 * neither listed nor shown nor deleted (404 VOLUME_NOT_FOUND). */
#include "config.h"
#include "app.h"
#include "spec.h"
#include "store.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_LABELS 64

static void emit_volume(yajl_gen g, yajl_val v)
{
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "name", cm_json_get_str(v, "Name"));
	cm_jg_kv_str(g, "driver", cm_json_get_str(v, "Driver"));
	cm_jg_kv_str(g, "mountpoint", cm_json_get_str(v, "Mountpoint"));
	cm_jg_kv_str(g, "created_at", cm_json_get_str(v, "CreatedAt"));
	yajl_val labels = cm_json_get(v, "Labels");
	const char *inst = cm_json_get_str(labels, "io.container-manager.instance");
	cm_jg_str(g, "managed");
	cm_jg_bool(g, inst != NULL);
	cm_jg_str(g, "labels");
	yajl_gen_map_open(g);
	for (size_t i = 0; YAJL_IS_OBJECT(labels) && i < labels->u.object.len; i++)
		if (strncmp(labels->u.object.keys[i], "io.container-manager.", 21) && YAJL_IS_STRING(labels->u.object.values[i]))
			cm_jg_kv_str(g, labels->u.object.keys[i], labels->u.object.values[i]->u.string);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
}


static const char *path_name(struct cm_req *r)
{
	const char *n = r->params[0];
	if (!cm_valid_volume_name(n)) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_VOLUME_NAME", "name",
				  "'%.80s' is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+, at most 255)",
				  cm_valid_utf8(n, strlen(n)) ? n : "?");
		return NULL;
	}
	return n;
}

void h_volumes_list(struct cm_req *r)
{
	yajl_val v;
	long st = cm_app_docker_get(r, "/volumes", &v);
	if (st < 0)
		return;
	if (st != 200) {
		cm_respond_errorf(r, 500, "compose_error", "DOCKER_ERROR", NULL, "Docker answered %ld to the volume list", st);
		return;
	}
	yajl_val list = cm_json_get(v, "Volumes");
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_str(g, "volumes");
	yajl_gen_array_open(g);
	for (size_t i = 0; YAJL_IS_ARRAY(list) && i < list->u.array.len; i++)
		if (cm_volume_is_ours(list->u.array.values[i], r->app->instance))
			emit_volume(g, list->u.array.values[i]);
	yajl_gen_array_close(g);
	yajl_gen_map_close(g);
	yajl_tree_free(v);
	cm_respond_gen(r, 200, g);
}

void h_volume_get(struct cm_req *r)
{
	const char *name = path_name(r);
	if (!name)
		return;
	char path[320];
	if (cm_pathf(path, sizeof path, "/volumes/%s", name) < 0) { /* the name's characters need no escaping */
		cm_respond_errorf(r, 404, "not_found", "VOLUME_NOT_FOUND", "name", "no such volume");
		return;
	}
	yajl_val v;
	long st = cm_app_docker_get(r, path, &v);
	if (st < 0)
		return;
	if (st == 404 || (st == 200 && !cm_volume_is_ours(v, r->app->instance))) {
		if (v)
			yajl_tree_free(v);
		cm_respond_errorf(r, 404, "not_found", "VOLUME_NOT_FOUND", "name", "volume %s not found", name);
		return;
	}
	if (st != 200) {
		cm_respond_errorf(r, 500, "compose_error", "DOCKER_ERROR", "name", "Docker answered %ld to the volume inspect", st);
		return;
	}
	yajl_gen g = cm_jg_new();
	emit_volume(g, v);
	yajl_tree_free(v);
	char *body = cm_jg_finish(g);
	cm_respond_json(r, 200, NULL, body ? body : "{}");
	free(body);
}

static bool valid_label_key(const char *k)
{
	size_t n = strlen(k);
	if (!n || n > 128 || !strncmp(k, "io.container-manager.", 21))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)k[i]) || strchr("._/-", k[i])))
			return false;
	return true;
}

void h_volume_create(struct cm_req *r)
{
	struct cm_error err = {0};
	yajl_val v = cm_req_json(r, false, &err);
	if (!v) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	const char *name = NULL;
	yajl_val labels = NULL;
	if (!YAJL_IS_OBJECT(v)) {
		cm_err_validation(&err, "INVALID_TYPE", NULL, "the body must be an object {name, labels}");
		goto fail;
	}
	for (size_t i = 0; i < v->u.object.len; i++) {
		const char *k = v->u.object.keys[i];
		yajl_val x = v->u.object.values[i];
		if (!strcmp(k, "name")) {
			if (!YAJL_IS_STRING(x)) {
				cm_err_validation(&err, "INVALID_TYPE", "name", "name must be a string");
				goto fail;
			}
			name = x->u.string;
		} else if (!strcmp(k, "labels")) {
			if (!YAJL_IS_OBJECT(x) && !YAJL_IS_NULL(x)) {
				cm_err_validation(&err, "INVALID_TYPE", "labels", "labels must be an object of strings");
				goto fail;
			}
			labels = YAJL_IS_OBJECT(x) ? x : NULL;
		} else if (!strcasecmp(k, "driver") || !strcasecmp(k, "driveropts") || !strcasecmp(k, "driver_opts") ||
			   !strcasecmp(k, "options")) {
			cm_err_validation(&err, "FORBIDDEN_OPTION", k, "%.64s cannot be set through this API (local volumes only)", k);
			goto fail;
		} else {
			cm_err_validation(&err, "UNKNOWN_FIELD", k, "unknown field \"%.64s\" (name, labels)", k);
			goto fail;
		}
	}
	if (!name || !*name) {
		cm_err_validation(&err, "MISSING_FIELD", "name", "name is required");
		goto fail;
	}
	if (!cm_valid_volume_name(name)) {
		cm_err_validation(&err, "INVALID_VOLUME_NAME", "name", "'%.80s' is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
				  cm_valid_utf8(name, strlen(name)) ? name : "?");
		goto fail;
	}
	if (labels && labels->u.object.len > MAX_LABELS) {
		cm_err_validation(&err, "INVALID_VALUE", "labels", "at most %d labels", MAX_LABELS);
		goto fail;
	}
	for (size_t i = 0; labels && i < labels->u.object.len; i++) {
		const char *k = labels->u.object.keys[i];
		yajl_val x = labels->u.object.values[i];
		char f[160];
		snprintf(f, sizeof f, "labels.%.128s", k);
		if (!valid_label_key(k)) {
			cm_err_validation(&err, "INVALID_VALUE", f, "label keys are 1-128 of letters, digits and ._/- "
				       "(io.container-manager.* is reserved)");
			goto fail;
		}
		if (!YAJL_IS_STRING(x) || strlen(x->u.string) > 1024) {
			cm_err_validation(&err, "INVALID_VALUE", f, "a label value is a string of at most 1024 bytes");
			goto fail;
		}
	}
	if (cm_dry_run(r)) {
		yajl_tree_free(v);
		return;
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "name", name);
	cm_jg_str(g, "labels");
	if (labels)
		cm_jg_value(g, labels);
	else
		cm_jg_raw(g, "{}");
	yajl_gen_map_close(g);
	char *args = cm_jg_finish(g);
	struct cm_buf key = {0};
	cm_buf_printf(&key, "volume:%s", name);
	char *result = NULL;
	int rc = args ? cm_run_job(r, "volume.create", cm_buf_str(&key), args, 30, NULL, NULL, &result) : -1;
	free(args);
	cm_buf_free(&key);
	if (rc > 0) {
		struct cm_error e2;
		yajl_val res = cm_json_parse(result ? result : "{}", result ? strlen(result) : 2, &e2);
		g = cm_jg_new();
		if (res)
			emit_volume(g, res);
		else
			cm_jg_raw(g, "{}");
		char *body = cm_jg_finish(g);
		char hdr[320];
		snprintf(hdr, sizeof hdr, "Location: /volumes/%s\r\n", name);
		cm_respond_json(r, 201, hdr, body ? body : "{}");
		free(body);
		if (res)
			yajl_tree_free(res);
	} else if (rc < 0 && !r->responded) {
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
	}
	free(result);
	yajl_tree_free(v);
	return;
fail:
	yajl_tree_free(v);
	cm_respond_error(r, &err, NULL);
}

void h_volume_delete(struct cm_req *r)
{
	const char *name = path_name(r);
	if (!name)
		return;
	/* a volume of another stack is not found (the job checks again before it deletes) */
	char path[320];
	snprintf(path, sizeof path, "/volumes/%s", name); /* the name's characters need no escaping */
	yajl_val v;
	long dst = cm_app_docker_get(r, path, &v);
	if (dst < 0)
		return;
	bool ours = dst == 200 && cm_volume_is_ours(v, r->app->instance);
	if (v)
		yajl_tree_free(v);
	if (dst != 200 && dst != 404) {
		cm_respond_errorf(r, 500, "compose_error", "DOCKER_ERROR", "name", "Docker answered %ld to the volume inspect", dst);
		return;
	}
	if (!ours) {
		cm_respond_errorf(r, 404, "not_found", "VOLUME_NOT_FOUND", "name", "volume %s not found", name);
		return;
	}
	static const char *users = "SELECT cuid FROM containers c WHERE EXISTS (SELECT 1 FROM json_each(c.volumes) j "
				   "WHERE json_extract(j.value, '$.type') = 'volume' AND json_extract(j.value, '$.source') = ?) "
				   "LIMIT 10";
	struct cm_error err = {0};
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, users, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	struct cm_buf who = {0};
	while (sqlite3_step(st) == SQLITE_ROW)
		cm_buf_printf(&who, "%s%s", who.len ? ", " : "", cm_col_str(st, 0));
	sqlite3_reset(st);
	if (who.len) {
		cm_respond_errorf(r, 409, "conflict", "VOLUME_IN_USE", "name", "volume %s is mounted by managed container(s) %s",
				  name, cm_buf_str(&who));
		cm_buf_free(&who);
		return;
	}
	cm_buf_free(&who);
	struct cm_buf args = {0}, key = {0};
	cm_buf_printf(&args, "{\"name\":\"%s\"}", name); /* a valid name needs no JSON escaping */
	cm_buf_printf(&key, "volume:%s", name);
	char *result = NULL;
	int rc = cm_run_job(r, "volume.delete", cm_buf_str(&key), cm_buf_str(&args), 30, NULL, NULL, &result);
	cm_buf_free(&args);
	cm_buf_free(&key);
	free(result);
	if (rc > 0)
		cm_respond(r, 204, NULL, NULL, NULL, 0);
}
