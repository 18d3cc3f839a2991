/* store.h: container rows and job rows, shared by the workers and the runner. */
#ifndef CM_STORE_H
#define CM_STORE_H

#include "cm.h"
#include "db.h"
#include "json.h"
#include "spec.h"

/* Column list every container SELECT uses, in the order cm_store_emit_container reads. */
#define CM_CONTAINER_COLS                                                                              \
	"cuid, docker_id, image, command, env, tags, cpus, memory, pids, ports, ports_actual, status, " \
	"exit_code, started_at, finished_at, restart_count, created_at, updated_at, version, seq, doc, volumes"
enum {
	CC_CUID, CC_DOCKER_ID, CC_IMAGE, CC_COMMAND, CC_ENV, CC_TAGS, CC_CPUS, CC_MEMORY, CC_PIDS, CC_PORTS,
	CC_PORTS_ACTUAL, CC_STATUS, CC_EXIT_CODE, CC_STARTED, CC_FINISHED, CC_RESTARTS, CC_CREATED, CC_UPDATED,
	CC_VERSION, CC_SEQ, CC_DOC, CC_VOLUMES
};

/* Emits the container object for the current row of st (selected with CM_CONTAINER_COLS). */
int cm_store_emit_container(yajl_gen g, sqlite3_stmt *st);
/* Emits the live-state object (GET .../status). */
int cm_store_emit_status(yajl_gen g, sqlite3_stmt *st);
/* Loads the spec and version of cuid. Returns 0, or -1 with err (404 when missing). */
int cm_store_load_spec(struct cm_db *db, const char *cuid, struct cm_spec *spec, int64_t *version,
		       char *status, size_t statussz, struct cm_error *err);

/* MAX_CONTAINERS. Counts the managed containers of this instance as the database holds them:
 * REST rows (every status, 'creating' included), harpoon definitions that have or are getting a
 * container (except except_harpoon's own row, which the caller is about to reuse; NULL: none),
 * apps and app creates still queued or running. Returns 0 when one more fits under max, or -1
 * with err: 429 CONTAINER_LIMIT_REACHED (details.limit, details.used). Call it inside the write
 * transaction (BEGIN IMMEDIATE) that inserts the row or job, so racing creates are serialised
 * and never pass the limit together. */
int cm_container_quota(struct cm_db *db, long max, const char *except_harpoon, struct cm_error *err);

/* Jobs. cm_job_insert must run inside the caller's write transaction. */
int64_t cm_job_insert(struct cm_db *db, const char *kind, const char *cuid, const char *args,
		      const char *request_id, const char *user, struct cm_error *err);
/* Wakes the runner and waits until job id has ended. Returns 0 when it ended, or -1 with err
 * (503 RUNNER_UNAVAILABLE when no runner took it; 408 when it did not end in time). */
int cm_job_wait(struct cm_db *db, const char *runner_sock, int64_t id, long timeout_s, struct cm_error *err);
/* cm_job_wait that also asks go_on(ud) about once a second while the job runs: when it answers
 * false the wait ends early with the same 408 JOB_TIMEOUT (the job carries on). */
int cm_job_wait_while(struct cm_db *db, const char *runner_sock, int64_t id, long timeout_s,
		      bool (*go_on)(void *ud), void *ud, struct cm_error *err);
/* Cancels job id if it is still queued, recording the error it ends with; a queued create's
 * row goes too. Returns 1 if cancelled, 0 if it was no longer queued, -1 with err. */
int cm_job_cancel(struct cm_db *db, int64_t id, int status, const char *kind, const char *code, const char *message,
		  struct cm_error *err);
/* Waits up to timeout_ms for job id to end without changing anything (no cancel when the runner
 * is away; no transaction held). Returns 1 ended, 0 not yet, -1 with err. */
int cm_job_await(struct cm_db *db, const char *runner_sock, int64_t id, long timeout_ms, struct cm_error *err);
/* Makes the runner look at job id again and answer everyone waiting for it if it has ended. */
void cm_job_poke(const char *runner_sock, int64_t id);
/* Reads an ended job: returns 1 if it succeeded (result copied, caller frees), 0 if it failed
 * (job_err filled with the job's error), -1 on a database error (err). */
int cm_job_outcome(struct cm_db *db, int64_t id, char **result, struct cm_error *job_err, struct cm_error *err);

#endif
