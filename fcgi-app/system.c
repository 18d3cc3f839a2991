/* system.c: /healthz, /version and the auth sub-request endpoint. */
#include "config.h"
#include "app.h"

#include <stdio.h>
#include <string.h>

#define RUNNER_STALE_MS 10000

void h_healthz(struct cm_req *r)
{
	static const char *sql = "SELECT pid, heartbeat_ms, docker_ok, docker_version, api_version, "
				 "compose_version, docker_error FROM runner_state WHERE id = 1";
	struct cm_error err;
	const char *db = "ok";
	bool runner_ok = false, docker_ok = false;
	char docker_version[64] = "", compose_version[128] = "", docker_error[256] = "";
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	if (rc == SQLITE_ROW) {
		int64_t hb = sqlite3_column_int64(st, 1);
		runner_ok = cm_now_ms() - hb < RUNNER_STALE_MS;
		docker_ok = runner_ok && sqlite3_column_int(st, 2);
		snprintf(docker_version, sizeof docker_version, "%s", cm_col_str(st, 3) ? cm_col_str(st, 3) : "");
		snprintf(compose_version, sizeof compose_version, "%s", cm_col_str(st, 5) ? cm_col_str(st, 5) : "");
		snprintf(docker_error, sizeof docker_error, "%s", cm_col_str(st, 6) ? cm_col_str(st, 6) : "");
	} else if (rc != SQLITE_DONE) {
		db = "error";
	}
	if (st)
		sqlite3_reset(st);
	bool ok = runner_ok && docker_ok && !strcmp(db, "ok");
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "status", ok ? "ok" : "unavailable");
	cm_jg_kv_str(g, "compose_version", compose_version[0] ? compose_version : "none installed");
	cm_jg_kv_str(g, "docker_version", docker_version[0] && docker_ok ? docker_version : NULL);
	cm_jg_kv_str(g, "db", db);
	cm_jg_kv_str(g, "runner", runner_ok ? "ok" : "down");
	cm_jg_kv_str(g, "docker", docker_ok ? "ok" : "down");
	if (!ok) {
		char msg[400];
		if (!runner_ok)
			snprintf(msg, sizeof msg, "the job runner is not running");
		else if (!docker_ok)
			snprintf(msg, sizeof msg, "%s", docker_error[0] ? docker_error : "Docker engine unreachable: no answer");
		else
			snprintf(msg, sizeof msg, "database error");
		cm_jg_kv_str(g, "message", msg);
	}
	cm_jg_kv_str(g, "version", PACKAGE_VERSION);
	yajl_gen_map_close(g);
	char *body = cm_jg_finish(g);
	if (!ok)
		snprintf(r->error_code, sizeof r->error_code, "%s", runner_ok ? "DOCKER_UNAVAILABLE" : "RUNNER_UNAVAILABLE");
	cm_respond_json(r, ok ? 200 : 503, NULL, body ? body : "{}");
	free(body);
}

void h_version(struct cm_req *r)
{
	static const char text[] = CM_VERSION_STRING "\n";
	cm_respond(r, 200, "text/plain; charset=utf-8", NULL, text, sizeof text - 1);
}

/* nginx auth_request target: authentication already happened before routing. */
void h_auth(struct cm_req *r)
{
	char hdr[200];
	snprintf(hdr, sizeof hdr, "X-Auth-User: %s\r\n", r->user);
	cm_respond(r, 204, NULL, hdr, NULL, 0);
}
