/* apps_health.c: the health checker (a thread of the runner): every CHECK_MS it GETs each service
 * app's health path at the address nginx proxies to, records the outcome in the app's row (which
 * the route's gate reads per request), marks it unhealthy after repeated failures, and queues
 * app.restart for a container that is not running, with exponential back-off. */
#include "config.h"
#include "apps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Queues app.restart for name unless one of its jobs is already waiting. */
static void queue_restart(struct ctx *c, const char *name)
{
	struct cm_error err;
	char key[80], args[128];
	snprintf(key, sizeof key, "app:%s", name);
	snprintf(args, sizeof args, "{\"name\":\"%s\"}", name);
	if (cm_db_begin(&c->db, &err) < 0)
		return;
	sqlite3_stmt *st = cm_db_stmt(&c->db, "SELECT 1 FROM jobs WHERE cuid = ? AND status IN ('queued', 'running')", &err);
	if (!st) {
		cm_db_rollback(&c->db);
		return;
	}
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	bool busy = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_reset(st);
	if (busy || cm_job_insert(&c->db, "app.restart", key, args, NULL, "-", &err) < 0) {
		cm_db_rollback(&c->db);
		return;
	}
	if (cm_db_commit(&c->db, &err) < 0)
		return;
	pthread_mutex_lock(&c->rn->mu);
	c->rn->wake_seq++;
	pthread_cond_broadcast(&c->rn->cv);
	pthread_mutex_unlock(&c->rn->mu);
}

struct check {
	char name[64], scheme[8], health[520], status[16], docker_id[80];
	struct where w;
	long long port, failures, streak, next_restart;
};

static void check_one(struct ctx *c, CURL *h, const struct check *k)
{
	char msg[300] = "";
	int64_t now = cm_now_ms();
	if ((k->w.ip[0] || k->w.host_port > 0) && app_probe(h, k->scheme, &k->w, k->port, k->health, msg, sizeof msg) == 0) {
		if (strcmp(k->status, "healthy") || k->failures)
			cm_info("app %s is healthy", k->name);
		app_exec(c,
			 "UPDATE apps SET status = 'healthy', failures = 0, last_check = ?, last_ok = ?, last_error = NULL, "
			 "restart_streak = 0, next_restart_at = NULL WHERE name = ? AND docker_id = ?",
			 "iitt", (long long)now, (long long)now, k->name, k->docker_id);
		return;
	}
	if (!msg[0])
		snprintf(msg, sizeof msg, "the container publishes no port");
	long long f = k->failures + 1;
	const char *status = k->status;
	if ((!strcmp(status, "healthy") && f >= HEALTHY_FAILS) || (!strcmp(status, "starting") && f >= START_FAILS))
		status = "unhealthy";
	/* a dead container is started again, with back-off */
	bool running = true;
	struct where w2;
	struct cm_error e2;
	if (app_container_state(c, k->docker_id, k->port, &running, &w2, &e2) < 0)
		running = e2.status != 404;
	if (!running) {
		status = "unhealthy";
		snprintf(msg + strlen(msg), sizeof msg - strlen(msg), " (the container is not running)");
	}
	if (strcmp(status, k->status))
		cm_info("app %s is %s: %s", k->name, status, msg);
	long long next = k->next_restart, streak = k->streak;
	if (!running && now >= next) {
		long long backoff = 1000LL << (streak < 6 ? streak : 6);
		if (backoff > BACKOFF_MAX_MS)
			backoff = BACKOFF_MAX_MS;
		next = now + backoff;
		streak++;
		queue_restart(c, k->name);
		app_exec(c, "UPDATE apps SET restarts = restarts + 1 WHERE name = ?", "t", k->name);
	}
	app_exec(c,
		 "UPDATE apps SET status = ?, failures = ?, last_check = ?, last_error = ?, restart_streak = ?, "
		 "next_restart_at = ? WHERE name = ? AND docker_id = ?",
		 "tiitiitt", status, f, (long long)now, msg, streak, next, k->name, k->docker_id);
}

/* At start: containers (and images) of this stack's apps that have no row and no job on their
 * way (a delete or a failed create interrupted by a crash) are removed. */
static void sweep_orphans(struct ctx *c)
{
	struct cm_buf f = {0}, p = {0}, r = {0};
	struct cm_error e;
	cm_buf_printf(&f, "{\"label\":[\"%s=%s\",\"%s\"]}", INSTANCE_LABEL, c->rn->instance, APP_LABEL);
	cm_buf_puts(&p, "/containers/json?all=1&filters=");
	cm_buf_urlenc(&p, cm_buf_str(&f));
	long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 60, &e);
	yajl_val v = st == 200 ? cm_json_parse(cm_buf_str(&r), r.len, &e) : NULL;
	static const char *sql = "SELECT (SELECT COUNT(*) FROM apps WHERE name = ?1) + (SELECT COUNT(*) FROM jobs WHERE "
				 "cuid = 'app:' || ?1 AND status IN ('queued', 'running'))";
	for (size_t i = 0; YAJL_IS_ARRAY(v) && i < v->u.array.len; i++) {
		const char *name = cm_json_get_str(cm_json_get(v->u.array.values[i], "Labels"), APP_LABEL);
		if (!name || !cm_valid_app_name(name))
			continue;
		sqlite3_stmt *q = cm_db_stmt(&c->db, sql, &e);
		if (!q)
			break;
		sqlite3_bind_text(q, 1, name, -1, SQLITE_TRANSIENT);
		bool known = sqlite3_step(q) != SQLITE_ROW || sqlite3_column_int64(q, 0) > 0;
		sqlite3_reset(q);
		if (!known) {
			cm_warn("app %s: removing what is left of it (no row refers to it)", name);
			app_sweep(c, name, NULL, NULL);
		}
	}
	if (v)
		yajl_tree_free(v);
	cm_buf_free(&f);
	cm_buf_free(&p);
	cm_buf_free(&r);
}

void *health_thread(void *arg)
{
	struct runner *rn = arg;
	struct ctx c;
	struct cm_error err;
	if (ctx_open(&c, rn, &err) < 0) {
		cm_error("health checker: %s", err.message);
		return NULL;
	}
	CURL *h = curl_easy_init();
	if (!h) {
		ctx_close(&c);
		return NULL;
	}
	sweep_orphans(&c);
	static const char *sql = "SELECT name, scheme, health, status, docker_id, host_port, container_port, failures, "
				 "restart_streak, COALESCE(next_restart_at, 0), container_ip FROM apps WHERE lifetime = 'service' AND "
				 "status IN ('starting', 'healthy', 'unhealthy') AND docker_id IS NOT NULL ORDER BY name";
	while (!rn->stop) {
		int64_t started = cm_monotonic_ms();
		struct check *list = NULL;
		size_t n = 0, cap = 0;
		sqlite3_stmt *st = cm_db_stmt(&c.db, sql, &err);
		while (st && sqlite3_step(st) == SQLITE_ROW) {
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				void *p = realloc(list, cap * sizeof *list);
				if (!p)
					break;
				list = p;
			}
			struct check *k = &list[n++];
			snprintf(k->name, sizeof k->name, "%s", cm_col_str(st, 0) ? cm_col_str(st, 0) : "");
			snprintf(k->scheme, sizeof k->scheme, "%s", cm_col_str(st, 1) ? cm_col_str(st, 1) : "http");
			snprintf(k->health, sizeof k->health, "%s", cm_col_str(st, 2) ? cm_col_str(st, 2) : "/");
			snprintf(k->status, sizeof k->status, "%s", cm_col_str(st, 3) ? cm_col_str(st, 3) : "");
			snprintf(k->docker_id, sizeof k->docker_id, "%s", cm_col_str(st, 4) ? cm_col_str(st, 4) : "");
			k->w.host_port = sqlite3_column_int64(st, 5);
			snprintf(k->w.ip, sizeof k->w.ip, "%s", cm_col_str(st, 10) ? cm_col_str(st, 10) : "");
			k->port = sqlite3_column_int64(st, 6);
			k->failures = sqlite3_column_int64(st, 7);
			k->streak = sqlite3_column_int64(st, 8);
			k->next_restart = sqlite3_column_int64(st, 9);
		}
		if (st)
			sqlite3_reset(st);
		/* no statement stays open across the probes */
		for (size_t i = 0; i < n && !rn->stop; i++)
			check_one(&c, h, &list[i]);
		free(list);
		int64_t spent = cm_monotonic_ms() - started;
		if (spent < CHECK_MS && !rn->stop)
			usleep((useconds_t)(CHECK_MS - spent) * 1000);
	}
	curl_easy_cleanup(h);
	ctx_close(&c);
	return NULL;
}
