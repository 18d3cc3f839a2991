/* metrics.c: GET /metrics in the Prometheus text format (0.0.4): the counters every process
 * of the stack shares (requests by route and status, durations, Docker API errors, open
 * WebSocket sessions; lib/metrics.c) and gauges read from SQLite at scrape time (jobs by kind
 * and state, the queue, containers by state, runner and Docker up). */
#include "config.h"
#include "app.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNNER_STALE_MS 10000 /* as /healthz */

/* Writes name{label="value"...} count for each row of sql (text columns, then a count). */
static void gauge_rows(FILE *f, struct cm_req *r, const char *sql, const char *name, const char *l1, const char *l2)
{
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	if (!st)
		return;
	while (sqlite3_step(st) == SQLITE_ROW) {
		char v1[64], v2[64];
		cm_log_escape(v1, sizeof v1, cm_col_str(st, 0) ? cm_col_str(st, 0) : "");
		cm_log_escape(v2, sizeof v2, l2 && cm_col_str(st, 1) ? cm_col_str(st, 1) : "");
		for (char *p = v1; *p; p++)
			if (*p == '"' || *p == '\\')
				*p = '_';
		for (char *p = v2; *p; p++)
			if (*p == '"' || *p == '\\')
				*p = '_';
		if (l2)
			fprintf(f, "%s{%s=\"%s\",%s=\"%s\"} %lld\n", name, l1, v1, l2, v2, (long long)sqlite3_column_int64(st, 2));
		else
			fprintf(f, "%s{%s=\"%s\"} %lld\n", name, l1, v1, (long long)sqlite3_column_int64(st, 1));
	}
	sqlite3_reset(st);
}

static long long scalar(struct cm_req *r, const char *sql)
{
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, &err);
	long long v = -1;
	if (st && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	if (st)
		sqlite3_reset(st);
	return v;
}

void h_metrics(struct cm_req *r)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f) {
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		return;
	}
	if (cm_metrics_write(f) < 0)
		fprintf(f, "# the shared counters are not available (run directory not writable)\n");
	fprintf(f, "# HELP cm_jobs Jobs in the database by kind and state.\n# TYPE cm_jobs gauge\n");
	gauge_rows(f, r, "SELECT kind, status, count(*) FROM jobs GROUP BY kind, status ORDER BY kind, status", "cm_jobs",
		   "kind", "state");
	fprintf(f, "# HELP cm_job_queue_depth Jobs waiting for the runner.\n# TYPE cm_job_queue_depth gauge\n"
		   "cm_job_queue_depth %lld\n",
		scalar(r, "SELECT count(*) FROM jobs WHERE status = 'queued'"));
	fprintf(f, "# HELP cm_containers Managed containers by state.\n# TYPE cm_containers gauge\n");
	gauge_rows(f, r, "SELECT status, count(*) FROM containers GROUP BY status ORDER BY status", "cm_containers", "state",
		   NULL);
	long long hb = scalar(r, "SELECT heartbeat_ms FROM runner_state WHERE id = 1");
	long long age = hb > 0 ? (long long)cm_now_ms() - hb : -1;
	long long docker_ok = scalar(r, "SELECT docker_ok FROM runner_state WHERE id = 1");
	bool runner_up = age >= 0 && age < RUNNER_STALE_MS;
	fprintf(f, "# HELP cm_runner_up The job runner's heartbeat is fresh.\n# TYPE cm_runner_up gauge\ncm_runner_up %d\n"
		   "# HELP cm_docker_up The runner reaches the Docker engine.\n# TYPE cm_docker_up gauge\ncm_docker_up %d\n",
		runner_up ? 1 : 0, runner_up && docker_ok == 1 ? 1 : 0);
	if (fclose(f) != 0 || !text) {
		free(text);
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		return;
	}
	cm_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
	free(text);
}
