/* audit.c: one audit row per request, after the response has been flushed. The row goes as
 * a datagram to the runner's batch writer (one transaction for many rows), so the request
 * path never waits for the SQLite write lock; when the writer cannot take it, the worker
 * inserts the row itself. */
#include "config.h"
#include "app.h"
#include "audit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int audit_fd = -1;
static struct sockaddr_un audit_addr;

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
	if (audit_fd < 0 && audit_addr.sun_family == 0) {
		audit_addr.sun_family = AF_UNIX;
		if (cm_pathf(audit_addr.sun_path, sizeof audit_addr.sun_path, "%s/audit.sock", r->app->cfg.run_dir) == 0)
			audit_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	}
	char *msg = audit_fd >= 0 ? cm_audit_encode(&row) : NULL;
	if (msg) {
		ssize_t n = sendto(audit_fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&audit_addr,
				   sizeof audit_addr);
		size_t len = strlen(msg);
		free(msg);
		if (n == (ssize_t)len)
			return;
	}
	/* the writer is down or saturated: keep the row anyway */
	struct cm_error err;
	if (cm_audit_insert(&r->app->db, &row, &err) < 0)
		cm_warn("audit row lost for %s: %s", r->request_id, err.message);
}
