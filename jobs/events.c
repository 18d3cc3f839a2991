/* events.c: keeps SQLite in step with Docker: the /events follower, the reconciler
 * (at start and after every reconnect) and the heartbeat that /healthz reads. */
#include "config.h"
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define LABEL "io.container-manager.cuid"
#define INSTANCE_LABEL "io.container-manager.instance"

/* Runs argv and captures the first line of its stdout into out. Returns exit status or -1. */
static int capture(char *const argv[], char *out, size_t outsz)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rc != 0) {
		close(p[0]);
		return -1;
	}
	size_t got = 0;
	ssize_t n;
	while (got + 1 < outsz && (n = read(p[0], out + got, outsz - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
	char sink[256];
	while (read(p[0], sink, sizeof sink) > 0)
		;
	close(p[0]);
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void detect_compose(struct runner *rn)
{
	char v[100];
	char *const v2[] = {"docker", "compose", "version", "--short", NULL};
	char *const v1[] = {"docker-compose", "version", "--short", NULL};
	if (capture(v2, v, sizeof v) == 0 && v[0])
		snprintf(rn->compose_version, sizeof rn->compose_version, "%s (docker compose v2 plugin)", v);
	else if (capture(v1, v, sizeof v) == 0 && v[0])
		snprintf(rn->compose_version, sizeof rn->compose_version, "%s (docker-compose v1)", v);
	else
		rn->compose_version[0] = '\0';
	cm_info("compose: %s", rn->compose_version[0] ? rn->compose_version : "none installed");
}

static void heartbeat(struct ctx *c, bool ok, const char *version, const char *api, const char *error)
{
	static const char *sql =
		"INSERT INTO runner_state(id, pid, heartbeat_ms, docker_ok, docker_version, api_version, "
		"compose_version, docker_error) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET "
		"pid = ?1, heartbeat_ms = ?2, docker_ok = ?3, docker_version = COALESCE(?4, docker_version), "
		"api_version = COALESCE(?5, api_version), compose_version = ?6, docker_error = ?7";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, &err);
	if (!st)
		return;
	sqlite3_bind_int64(st, 1, getpid());
	sqlite3_bind_int64(st, 2, cm_now_ms());
	sqlite3_bind_int(st, 3, ok);
	sqlite3_bind_text(st, 4, version, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 5, api, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 6, c->rn->compose_version[0] ? c->rn->compose_version : NULL, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 7, error, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_DONE)
		cm_warn("heartbeat: %s", sqlite3_errmsg(c->db.h));
	sqlite3_reset(st);
}

void *monitor_thread(void *arg)
{
	struct runner *rn = arg;
	struct ctx c;
	struct cm_error err;
	if (ctx_open(&c, rn, &err) < 0) {
		cm_error("monitor: %s", err.message);
		return NULL;
	}
	bool was_ok = false;
	while (!rn->stop) {
		struct cm_buf resp = {0};
		long st = cm_docker_call(&c.docker, "GET", "/_ping", NULL, &resp, 5, &err);
		cm_buf_free(&resp);
		bool ok = st == 200;
		char version[64] = "", api[32] = "";
		if (ok && !was_ok) {
			st = cm_docker_call(&c.docker, "GET", "/version", NULL, &resp, 5, &err);
			if (st == 200) {
				struct cm_error e2;
				yajl_val v = cm_json_parse(cm_buf_str(&resp), resp.len, &e2);
				if (v) {
					snprintf(version, sizeof version, "%s", cm_json_get_str(v, "Version") ? cm_json_get_str(v, "Version") : "");
					snprintf(api, sizeof api, "%s", cm_json_get_str(v, "ApiVersion") ? cm_json_get_str(v, "ApiVersion") : "");
					yajl_tree_free(v);
				}
			}
			cm_buf_free(&resp);
			cm_info("Docker engine reachable (version %s, API %s)", version, api);
		} else if (!ok && was_ok) {
			cm_warn("Docker engine unreachable: %s", err.message);
		}
		rn->docker_ok = ok;
		heartbeat(&c, ok, version[0] ? version : NULL, api[0] ? api : NULL,
			  ok ? NULL : (st > 0 ? "unexpected answer to /_ping" : err.message));
		was_ok = ok;
		for (int i = 0; i < 20 && !rn->stop; i++)
			usleep(100000);
	}
	ctx_close(&c);
	return NULL;
}

static bool is_pending(struct ctx *c, const char *cuid)
{
	return pending_job(c, cuid) != 0; /* errors count as pending: do nothing rash */
}

/* Brings one container row in line with Docker after an event. */
static void sync_one(struct ctx *c, const char *cuid, const char *action, const char *actor_id)
{
	struct cm_error err;
	yajl_val insp;
	long st = docker_inspect(c, cuid, &insp, &err);
	if (st == 200) {
		if (sync_row(c, cuid, insp, &err) < 0)
			cm_warn("sync %s: %s", cuid, err.message);
		yajl_tree_free(insp);
		return;
	}
	if (st == 404 && action && !strcmp(action, "destroy") && actor_id && !is_pending(c, cuid)) {
		static const char *del = "DELETE FROM containers WHERE cuid = ? AND docker_id = ?";
		sqlite3_stmt *s = cm_db_stmt(&c->db, del, &err);
		if (!s)
			return;
		sqlite3_bind_text(s, 1, cuid, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, actor_id, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(c->db.h))
			cm_warn("container %s was removed outside the service; its row is gone (files kept)", cuid);
		sqlite3_reset(s);
	}
}

int reconcile_all(struct ctx *c, struct cm_error *err)
{
	char filters[256];
	snprintf(filters, sizeof filters, "/containers/json?all=1&filters=%%7B%%22label%%22%%3A%%5B%%22" INSTANCE_LABEL "%%3D%s%%22%%5D%%7D",
		 c->rn->instance);
	struct cm_buf resp = {0};
	long st = cm_docker_call(&c->docker, "GET", filters, NULL, &resp, 60, err);
	if (st != 200) {
		cm_buf_free(&resp);
		return st < 0 ? -1 : cm_err_internal(err, "container list failed (%ld)", st);
	}
	yajl_val list = cm_json_parse(cm_buf_str(&resp), resp.len, err);
	cm_buf_free(&resp);
	if (!YAJL_IS_ARRAY(list)) {
		if (list)
			yajl_tree_free(list);
		return cm_err_internal(err, "container list is not an array");
	}
	/* 1. Docker containers: orphans go, the rest update their rows */
	for (size_t i = 0; i < list->u.array.len; i++) {
		yajl_val ct = list->u.array.values[i];
		const char *id = cm_json_get_str(ct, "Id");
		const char *cuid = cm_json_get_str(cm_json_get(ct, "Labels"), LABEL);
		yajl_val names = cm_json_get(ct, "Names");
		const char *name = YAJL_IS_ARRAY(names) && names->u.array.len ? YAJL_GET_STRING(names->u.array.values[0]) : NULL;
		if (!id || !cuid || !cm_valid_cuid(cuid) || is_pending(c, cuid))
			continue;
		static const char *sel = "SELECT docker_id FROM containers WHERE cuid = ?";
		sqlite3_stmt *s = cm_db_stmt(&c->db, sel, err);
		if (!s)
			break;
		sqlite3_bind_text(s, 1, cuid, -1, SQLITE_STATIC);
		int rc = sqlite3_step(s);
		bool has_row = rc == SQLITE_ROW;
		bool ours = has_row && cm_col_str(s, 0) && !strcmp(cm_col_str(s, 0), id);
		sqlite3_reset(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			continue;
		if (!has_row || !ours) {
			cm_warn("removing Docker container %s (%s): no row refers to it", name ? name : id, cuid);
			char path[256];
			snprintf(path, sizeof path, "/containers/%s?force=1&v=1", id);
			struct cm_buf r2 = {0};
			struct cm_error e2;
			cm_docker_call(&c->docker, "DELETE", path, NULL, &r2, 60, &e2);
			cm_buf_free(&r2);
			continue;
		}
		sync_one(c, cuid, NULL, NULL);
	}
	/* 2. Rows whose container vanished, or whose creation never finished */
	static const char *rows = "SELECT cuid, docker_id, status FROM containers";
	sqlite3_stmt *s = cm_db_stmt(&c->db, rows, err);
	if (!s) {
		yajl_tree_free(list);
		return -1;
	}
	struct gone_row {
		char cuid[40];
		char docker_id[80];
		char status[16];
	} *gone = NULL;
	size_t ngone = 0, cap = 0;
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *cuid = cm_col_str(s, 0);
		const char *did = cm_col_str(s, 1);
		bool found = false;
		for (size_t i = 0; did && i < list->u.array.len && !found; i++) {
			const char *id = cm_json_get_str(list->u.array.values[i], "Id");
			found = id && !strcmp(id, did);
		}
		if (found)
			continue;
		if (ngone == cap) {
			cap = cap ? cap * 2 : 16;
			void *n = realloc(gone, cap * sizeof *gone);
			if (!n)
				break;
			gone = n;
		}
		snprintf(gone[ngone].cuid, sizeof gone[ngone].cuid, "%s", cuid);
		snprintf(gone[ngone].docker_id, sizeof gone[ngone].docker_id, "%s", did ? did : "");
		snprintf(gone[ngone].status, sizeof gone[ngone].status, "%s", cm_col_str(s, 2) ? cm_col_str(s, 2) : "");
		ngone++;
	}
	sqlite3_reset(s);
	yajl_tree_free(list);
	for (size_t i = 0; i < ngone; i++) {
		/* The list is a snapshot: a job may have created this container since (a create
		 * re-run after a crash does exactly that). Only Docker's own 404 for the id counts. */
		if (gone[i].docker_id[0]) {
			char path[160];
			snprintf(path, sizeof path, "/containers/%s/json", gone[i].docker_id);
			struct cm_buf r2 = {.limit = 1 << 20};
			struct cm_error e2;
			long ist = cm_docker_call(&c->docker, "GET", path, NULL, &r2, 30, &e2);
			cm_buf_free(&r2);
			if (ist != 404)
				continue;
		}
		/* decided in one statement: a job that started (or finished) since the snapshot
		 * keeps its row */
		static const char *del = "DELETE FROM containers WHERE cuid = ?1 AND docker_id IS ?2 AND status IS ?3 "
					 "AND NOT EXISTS (SELECT 1 FROM jobs WHERE cuid = ?1 AND status IN ('queued','running'))";
		s = cm_db_stmt(&c->db, del, err);
		if (!s)
			break;
		sqlite3_bind_text(s, 1, gone[i].cuid, -1, SQLITE_STATIC);
		if (gone[i].docker_id[0])
			sqlite3_bind_text(s, 2, gone[i].docker_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, gone[i].status, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(c->db.h))
			cm_warn("container %s has no Docker container any more; its row is removed (files kept)", gone[i].cuid);
		sqlite3_reset(s);
	}
	free(gone);
	struct cm_error e3;
	if (harpoon_reconcile(c, &e3) < 0)
		cm_warn("start_container containers not reconciled: %s", e3.message);
	return 0;
}

struct ev_state {
	struct ctx *c;
	struct cm_buf line;
	int64_t last_time; /* seconds, for ?since= on reconnect */
};

static void handle_event(struct ev_state *es, const char *text, size_t len)
{
	struct cm_error err;
	yajl_val v = cm_json_parse(text, len, &err);
	if (!v)
		return;
	const char *type = cm_json_get_str(v, "Type");
	const char *action = cm_json_get_str(v, "Action");
	yajl_val actor = cm_json_get(v, "Actor");
	const char *id = cm_json_get_str(actor, "ID");
	const char *cuid = cm_json_get_str(cm_json_get(actor, "Attributes"), LABEL);
	long long t = 0;
	if (cm_json_get_int(v, "time", &t))
		es->last_time = t;
	if (type && !strcmp(type, "container") && cuid && cm_valid_cuid(cuid) && action &&
	    strncmp(action, "exec_", 5) && strcmp(action, "top") && strcmp(action, "attach") &&
	    strncmp(action, "archive-path", 12) && strncmp(action, "extract-to-dir", 14))
		sync_one(es->c, cuid, action, id);
	else if (type && !strcmp(type, "container"))
		harpoon_event(es->c, cm_json_get_str(cm_json_get(actor, "Attributes"), "io.container-manager.harpoon"), action, id);
	yajl_tree_free(v);
}

static int on_chunk(const char *data, size_t len, void *ud)
{
	struct ev_state *es = ud;
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\n') {
			if (es->line.len)
				handle_event(es, es->line.data, es->line.len);
			es->line.len = 0;
		} else if (cm_buf_append(&es->line, data + i, 1) < 0) {
			es->line.len = 0;
		}
	}
	return 0;
}

void *events_thread(void *arg)
{
	struct runner *rn = arg;
	struct ctx c;
	struct cm_error err;
	if (ctx_open(&c, rn, &err) < 0) {
		cm_error("events: %s", err.message);
		return NULL;
	}
	/* the stream needs a handle of its own: the callback inspects through c.docker */
	struct cm_docker stream;
	if (cm_docker_init(&stream, rn->cfg.docker_host, &err) < 0) {
		cm_error("events: %s", err.message);
		ctx_close(&c);
		return NULL;
	}
	struct ev_state es = {.c = &c, .last_time = cm_now_ms() / 1000};
	while (!rn->stop) {
		int64_t since = es.last_time;
		if (reconcile_all(&c, &err) < 0) {
			for (int i = 0; i < 10 && !rn->stop; i++)
				usleep(100000);
			continue;
		}
		char path[512];
		snprintf(path, sizeof path,
			 "/events?since=%lld&filters=%%7B%%22type%%22%%3A%%5B%%22container%%22%%5D%%2C%%22label%%22%%3A%%5B%%22" INSTANCE_LABEL
			 "%%3D%s%%22%%5D%%7D",
			 (long long)since, rn->instance);
		es.line.len = 0;
		long st = cm_docker_stream(&stream, path, on_chunk, &es, &rn->stop, &err);
		if (!rn->stop)
			cm_warn("event stream ended (%ld): %s; reconnecting", st, st < 0 ? err.message : "closed");
		for (int i = 0; i < 10 && !rn->stop; i++)
			usleep(100000);
	}
	cm_buf_free(&es.line);
	cm_docker_free(&stream);
	ctx_close(&c);
	return NULL;
}
