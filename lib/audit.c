/* audit.c: the audit row codec and insert, shared by the workers and the runner's batch writer. */
#include "config.h"
#include "audit.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

static void bind_opt(sqlite3_stmt *st, int i, const char *v)
{
	if (v && *v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

int cm_audit_insert(struct cm_db *db, const struct cm_audit_row *row, struct cm_error *err)
{
	static const char *sql = "INSERT INTO audit(ts, request_id, user, remote_addr, method, path, cuid, action, "
				 "status, error_code, duration_ms, job_id, command, bytes_in, bytes_out, exit_code) "
				 "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, row->ts, -1, SQLITE_STATIC);
	bind_opt(st, 2, row->request_id);
	bind_opt(st, 3, row->user);
	bind_opt(st, 4, row->remote_addr);
	bind_opt(st, 5, row->method);
	bind_opt(st, 6, row->path);
	bind_opt(st, 7, row->cuid);
	bind_opt(st, 8, row->action);
	sqlite3_bind_int(st, 9, row->status);
	bind_opt(st, 10, row->error_code);
	sqlite3_bind_double(st, 11, row->duration_ms);
	if (row->job_id > 0)
		sqlite3_bind_int64(st, 12, row->job_id);
	bind_opt(st, 13, row->command);
	if (row->has_bytes) {
		sqlite3_bind_int64(st, 14, row->bytes_in);
		sqlite3_bind_int64(st, 15, row->bytes_out);
	}
	if (row->has_exit)
		sqlite3_bind_int(st, 16, row->exit_code);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return cm_db_fail(db, err, "audit insert");
	return 0;
}

char *cm_audit_encode(const struct cm_audit_row *r)
{
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	yajl_gen_map_open(g);
	const char *keys[] = {"ts",	"request_id", "user",	    "remote_addr", "method",
			      "path",	"cuid",	      "action",	    "error_code",  "command"};
	const char *vals[] = {r->ts,   r->request_id, r->user,	 r->remote_addr, r->method,
			      r->path, r->cuid,	      r->action, r->error_code,	 r->command};
	for (size_t i = 0; i < CM_ARRAY_LEN(keys); i++)
		if (vals[i] && *vals[i] && cm_jg_kv_str(g, keys[i], vals[i]) < 0) {
			yajl_gen_free(g);
			return NULL;
		}
	cm_jg_kv_int(g, "status", r->status);
	cm_jg_str(g, "duration_ms");
	cm_jg_double(g, r->duration_ms);
	cm_jg_kv_int(g, "job_id", r->job_id);
	if (r->has_bytes) {
		cm_jg_kv_int(g, "bytes_in", r->bytes_in);
		cm_jg_kv_int(g, "bytes_out", r->bytes_out);
	}
	if (r->has_exit)
		cm_jg_kv_int(g, "exit_code", r->exit_code);
	yajl_gen_map_close(g);
	return cm_jg_finish(g);
}

int cm_audit_decode(const char *text, size_t len, struct cm_audit_row *row, yajl_val *tree)
{
	struct cm_error err;
	memset(row, 0, sizeof *row);
	*tree = cm_json_parse(text, len, &err);
	if (!*tree || !YAJL_IS_OBJECT(*tree))
		goto bad;
	row->ts = cm_json_get_str(*tree, "ts");
	row->request_id = cm_json_get_str(*tree, "request_id");
	row->user = cm_json_get_str(*tree, "user");
	row->remote_addr = cm_json_get_str(*tree, "remote_addr");
	row->method = cm_json_get_str(*tree, "method");
	row->path = cm_json_get_str(*tree, "path");
	row->cuid = cm_json_get_str(*tree, "cuid");
	row->action = cm_json_get_str(*tree, "action");
	row->error_code = cm_json_get_str(*tree, "error_code");
	row->command = cm_json_get_str(*tree, "command");
	long long v = 0;
	if (cm_json_get_int(*tree, "bytes_in", &v)) {
		row->has_bytes = true;
		row->bytes_in = v;
		row->bytes_out = cm_json_get_int(*tree, "bytes_out", &v) ? v : 0;
	}
	if (cm_json_get_int(*tree, "exit_code", &v)) {
		row->has_exit = true;
		row->exit_code = (int)v;
	}
	if (cm_json_get_int(*tree, "status", &v))
		row->status = (int)v;
	if (cm_json_get_int(*tree, "job_id", &v))
		row->job_id = v;
	yajl_val d = cm_json_get(*tree, "duration_ms");
	row->duration_ms = YAJL_IS_NUMBER(d) ? YAJL_GET_DOUBLE(d) : 0;
	if (!row->ts)
		goto bad;
	return 0;
bad:
	if (*tree)
		yajl_tree_free(*tree);
	*tree = NULL;
	return -1;
}

int cm_audit_send(const char *run_dir, const struct cm_audit_row *row, struct cm_db *db)
{
	/* one datagram socket per process, addressed to the runner's batch writer */
	static int fd = -1;
	static struct sockaddr_un addr;
	if (fd < 0 && addr.sun_family == 0) {
		addr.sun_family = AF_UNIX;
		if (cm_pathf(addr.sun_path, sizeof addr.sun_path, "%s/audit.sock", run_dir) == 0)
			fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	}
	char *msg = fd >= 0 ? cm_audit_encode(row) : NULL;
	if (msg) {
		size_t len = strlen(msg);
		ssize_t n = sendto(fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&addr, sizeof addr);
		free(msg);
		if (n == (ssize_t)len)
			return 0;
	}
	/* the writer is down or saturated: keep the row anyway */
	struct cm_error err;
	if (!db || cm_audit_insert(db, row, &err) < 0) {
		cm_warn("audit row lost for %s", row->request_id ? row->request_id : "?");
		return -1;
	}
	return 0;
}
