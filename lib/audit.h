/* audit.h: audit rows: one per request, inserted directly or batched by the runner. */
#ifndef CM_AUDIT_H
#define CM_AUDIT_H

#include "cm.h"
#include "db.h"
#include "json.h"

struct cm_audit_row {
	const char *ts, *request_id, *user, *remote_addr, *method, *path, *cuid, *action, *error_code;
	int status;
	double duration_ms;
	int64_t job_id;
	/* sessions (WebSocket): the command run (JSON), bytes in/out, exit code (has_exit) */
	const char *command;
	int64_t bytes_in, bytes_out;
	int exit_code;
	bool has_exit, has_bytes;
};

/* Inserts one row (no transaction of its own: callers batch). */
int cm_audit_insert(struct cm_db *db, const struct cm_audit_row *row, struct cm_error *err);
/* Hands a row to the runner's batch writer (RUN_DIR/audit.sock); when that fails, inserts it
 * into db itself (db may be NULL). Returns -1 only when the row is lost. */
int cm_audit_send(const char *run_dir, const struct cm_audit_row *row, struct cm_db *db);
/* Encodes a row as one JSON datagram (caller frees). */
char *cm_audit_encode(const struct cm_audit_row *row);
/* Decodes a datagram; the row's strings point into *tree (free with yajl_tree_free). */
int cm_audit_decode(const char *text, size_t len, struct cm_audit_row *row, yajl_val *tree);

#endif
