/* definitions.c: read-only views of the image definitions that start_container serves, what
 * runs for each, and their builds with the build output (harpoon's endpoints live in cm-ws).
 *
 *   GET /definitions          every definition: state, container, ports, last build
 *   GET /definitions/{name}   one definition: the normalized definition, recent builds, and
 *                             the output of the latest build */
#include "config.h"
#include "app.h"
#include "imagedef.h"

#include <stdio.h>
#include <string.h>

static const char *col(sqlite3_stmt *st, int i)
{
	return cm_col_str(st, i);
}

/* One build row (id, status, hash, tag, started_at, finished_at, error) as an object. */
static void emit_build(yajl_gen g, sqlite3_stmt *st, int base)
{
	yajl_gen_map_open(g);
	cm_jg_kv_int(g, "id", sqlite3_column_int64(st, base));
	cm_jg_kv_str(g, "status", col(st, base + 1));
	cm_jg_kv_str(g, "hash", col(st, base + 2));
	cm_jg_kv_str(g, "tag", col(st, base + 3));
	cm_jg_kv_time(g, "started_at", sqlite3_column_int64(st, base + 4));
	if (sqlite3_column_type(st, base + 5) == SQLITE_NULL) {
		cm_jg_str(g, "finished_at");
		cm_jg_null(g);
	} else {
		cm_jg_kv_time(g, "finished_at", sqlite3_column_int64(st, base + 5));
	}
	cm_jg_kv_str(g, "error", col(st, base + 6));
	yajl_gen_map_close(g);
}

/* state, container_id, ports of a definition's harpoon row (columns base..base+2) */
static void emit_running(yajl_gen g, sqlite3_stmt *st, int base)
{
	cm_jg_kv_str(g, "state", col(st, base) ? col(st, base) : "stopped");
	cm_jg_kv_str(g, "container_id", col(st, base + 1));
	cm_jg_str(g, "ports");
	if (col(st, base + 2))
		cm_jg_raw(g, col(st, base + 2));
	else
		cm_jg_null(g);
}

void h_definitions_list(struct cm_req *r)
{
	static const char *sql =
		"SELECT d.name, h.state, h.docker_id, h.ports, "
		"b.id, b.status, b.hash, b.tag, b.started_at, b.finished_at, b.error "
		"FROM image_defs d LEFT JOIN harpoon h ON h.image = d.name "
		"LEFT JOIN builds b ON b.id = (SELECT max(id) FROM builds WHERE image = d.name) ORDER BY d.name";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_str(g, "definitions");
	yajl_gen_array_open(g);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "name", col(st, 0));
		emit_running(g, st, 1);
		cm_jg_str(g, "last_build");
		if (sqlite3_column_type(st, 4) == SQLITE_NULL)
			cm_jg_null(g);
		else
			emit_build(g, st, 4);
		yajl_gen_map_close(g);
	}
	sqlite3_reset(st);
	yajl_gen_array_close(g);
	yajl_gen_map_close(g);
	char *body = cm_jg_finish(g);
	if (rc != SQLITE_DONE || !body) {
		free(body);
		cm_db_fail(&r->app->db, &err, "read the definitions");
		cm_respond_error(r, &err, NULL);
		return;
	}
	cm_respond_json(r, 200, NULL, body);
	free(body);
}

void h_definition_get(struct cm_req *r)
{
	const char *name = r->params[0];
	struct cm_error err;
	if (!cm_imagedef_valid_name(name)) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "name",
				  "\"%.64s\" is not a definition name (a-z 0-9 _ . -, at most 63)", name);
		return;
	}
	static const char *one = "SELECT d.def, h.state, h.docker_id, h.ports FROM image_defs d "
				 "LEFT JOIN harpoon h ON h.image = d.name WHERE d.name = ?";
	static const char *builds = "SELECT id, status, hash, tag, started_at, finished_at, error, log FROM builds "
				    "WHERE image = ? ORDER BY id DESC LIMIT 20";
	struct cm_db *db = &r->app->db;
	sqlite3_stmt *st = cm_db_stmt(db, one, &err);
	sqlite3_stmt *bs = st ? cm_db_stmt(db, builds, &err) : NULL;
	if (!bs) {
		if (st)
			sqlite3_reset(st);
		cm_respond_error(r, &err, NULL);
		return;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			cm_respond_errorf(r, 404, "not_found", "IMAGE_DEFINITION_NOT_FOUND", "name", "no image definition named \"%s\"",
					  name);
		else
			cm_respond_error(r, (cm_db_fail(db, &err, "read the definition"), &err), NULL);
		return;
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "name", name);
	cm_jg_str(g, "definition");
	cm_jg_raw(g, col(st, 0) ? col(st, 0) : "null");
	emit_running(g, st, 1);
	sqlite3_reset(st);
	cm_jg_str(g, "builds");
	yajl_gen_array_open(g);
	sqlite3_bind_text(bs, 1, name, -1, SQLITE_STATIC);
	char *log = NULL;
	bool first = true;
	while ((rc = sqlite3_step(bs)) == SQLITE_ROW) {
		emit_build(g, bs, 0);
		if (first && col(bs, 7))
			log = strdup(col(bs, 7));
		first = false;
	}
	sqlite3_reset(bs);
	yajl_gen_array_close(g);
	cm_jg_kv_str(g, "log", log);
	free(log);
	yajl_gen_map_close(g);
	char *body = cm_jg_finish(g);
	if (rc != SQLITE_DONE || !body) {
		free(body);
		cm_respond_errorf(r, 500, "internal_error", "DATABASE_ERROR", NULL, "cannot read the builds of %s", name);
		return;
	}
	cm_respond_json(r, 200, NULL, body);
	free(body);
}
