/* audit.c: one audit row per request, after the response has been flushed. The row goes as
 * a datagram to the runner's batch writer (one transaction for many rows), so the request
 * path never waits for the SQLite write lock; when the writer cannot take it, the worker
 * inserts the row itself. */
#include "config.h"
#include "app.h"
#include "audit.h"
#include "metrics.h"

void cm_audit_write(struct cm_req *r)
{
	char ts[32];
	cm_time_rfc3339(ts, cm_now_ms());
	struct cm_audit_row row = {
		.ts = ts, .request_id = r->request_id, .user = r->user, .remote_addr = r->remote_addr,
		.method = r->method, .path = r->path, .cuid = r->cuid, .action = r->action,
		.error_code = r->error_code, .status = r->status,
		.duration_ms = (double)(cm_monotonic_us() - r->start_us) / 1000.0, .job_id = r->job_id,
	};
	cm_metrics_request(r->action, r->method, r->status, cm_monotonic_us() - r->start_us);
	cm_audit_send(r->app->cfg.run_dir, &row, &r->app->db);
}
