/* auditd.c: the runner's audit writer. Workers send one datagram per request; this thread
 * inserts them in batches (one write transaction per batch), which keeps the SQLite write
 * lock off the request path. Datagrams that cannot be queued are inserted by the worker. */
#include "config.h"
#include "runner.h"
#include "audit.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BATCH 512
#define DGRAM_MAX 16384

static int flush(struct ctx *c, struct cm_audit_row *rows, yajl_val *trees, int n)
{
	struct cm_error err;
	int rc = -1;
	for (int attempt = 0; attempt < 3 && rc < 0; attempt++) {
		if (cm_db_begin(&c->db, &err) < 0) {
			usleep(50000);
			continue;
		}
		int i;
		for (i = 0; i < n; i++)
			if (cm_audit_insert(&c->db, &rows[i], &err) < 0)
				break;
		if (i == n && cm_db_commit(&c->db, &err) == 0)
			rc = 0;
		else
			cm_db_rollback(&c->db);
	}
	if (rc < 0)
		cm_error("audit: %d rows lost: %s", n, err.message);
	for (int i = 0; i < n; i++)
		yajl_tree_free(trees[i]);
	return rc;
}

void *audit_thread(void *arg)
{
	struct runner *rn = arg;
	struct ctx c;
	struct cm_error err;
	if (ctx_open(&c, rn, &err) < 0) {
		cm_error("audit: %s", err.message);
		return NULL;
	}
	char path[PATH_MAX];
	int fd = -1;
	if (cm_pathf(path, sizeof path, "%s/audit.sock", rn->cfg.run_dir) < 0 ||
	    (fd = cm_unix_bind(path, SOCK_DGRAM | SOCK_NONBLOCK, 0)) < 0) {
		cm_error("audit: cannot bind the socket: %s", strerror(errno));
		ctx_close(&c);
		return NULL;
	}
	int rcvbuf = 8 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	static struct cm_audit_row rows[BATCH];
	static yajl_val trees[BATCH];
	static char buf[DGRAM_MAX];
	while (!rn->stop) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0) /* short: stop is noticed quickly */
			continue;
		/* gather for up to 100 ms: few commits keep the readers' page caches valid */
		int n = 0;
		int64_t until = cm_monotonic_ms() + 100;
		while (n < BATCH && !rn->stop) {
			ssize_t got = recv(fd, buf, sizeof buf, 0);
			if (got < 0 && errno == EAGAIN) {
				int64_t left = until - cm_monotonic_ms();
				if (left <= 0)
					break;
				struct pollfd q = {.fd = fd, .events = POLLIN};
				poll(&q, 1, (int)left);
				continue;
			}
			if (got <= 0)
				break;
			if (cm_audit_decode(buf, (size_t)got, &rows[n], &trees[n]) == 0)
				n++;
		}
		if (n)
			flush(&c, rows, trees, n);
	}
	/* what is still queued when we stop */
	int n = 0;
	ssize_t got;
	while (n < BATCH && (got = recv(fd, buf, sizeof buf, 0)) > 0)
		if (cm_audit_decode(buf, (size_t)got, &rows[n], &trees[n]) == 0)
			n++;
	if (n)
		flush(&c, rows, trees, n);
	close(fd);
	unlink(path);
	ctx_close(&c);
	return NULL;
}
