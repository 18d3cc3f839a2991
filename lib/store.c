/* store.c: rendering container rows, and the job queue seen from the workers. */
#include "config.h"
#include "store.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int emit_time(yajl_gen g, const char *key, sqlite3_stmt *st, int col)
{
	return cm_jg_kv_time(g, key, sqlite3_column_type(st, col) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, col));
}

static int emit_ports(yajl_gen g, sqlite3_stmt *st)
{
	const char *actual = cm_col_str(st, CC_PORTS_ACTUAL);
	return cm_jg_raw(g, actual && *actual ? actual : cm_col_str(st, CC_PORTS));
}

static int emit_exit_code(yajl_gen g, sqlite3_stmt *st)
{
	cm_jg_str(g, "exit_code");
	if (sqlite3_column_type(st, CC_EXIT_CODE) == SQLITE_NULL)
		return cm_jg_null(g);
	return cm_jg_int(g, sqlite3_column_int64(st, CC_EXIT_CODE));
}

int cm_store_emit_container(yajl_gen g, sqlite3_stmt *st)
{
	/* rendered by SQLite when the row was written (sql/0002_container_doc.sql) */
	return cm_jg_raw(g, cm_col_str(st, CC_DOC));
}

int cm_store_emit_status(yajl_gen g, sqlite3_stmt *st)
{
	const char *status = cm_col_str(st, CC_STATUS);
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "cuid", cm_col_str(st, CC_CUID));
	cm_jg_kv_str(g, "status", status);
	cm_jg_str(g, "running");
	cm_jg_bool(g, !strcmp(status, "running") || !strcmp(status, "paused") || !strcmp(status, "restarting"));
	cm_jg_str(g, "paused");
	cm_jg_bool(g, !strcmp(status, "paused"));
	emit_exit_code(g, st);
	emit_time(g, "started_at", st, CC_STARTED);
	emit_time(g, "finished_at", st, CC_FINISHED);
	cm_jg_kv_int(g, "restart_count", sqlite3_column_int64(st, CC_RESTARTS));
	cm_jg_str(g, "ports");
	emit_ports(g, st);
	cm_jg_kv_str(g, "docker_id", cm_col_str(st, CC_DOCKER_ID));
	emit_time(g, "updated_at", st, CC_UPDATED);
	return yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -1;
}

int cm_store_load_spec(struct cm_db *db, const char *cuid, struct cm_spec *s, int64_t *version, char *status,
		       size_t statussz, struct cm_error *err)
{
	static const char *sql = "SELECT " CM_CONTAINER_COLS " FROM containers WHERE cuid = ?";
	memset(s, 0, sizeof *s);
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(st);
		return cm_err_set(err, 404, "not_found", "CONTAINER_NOT_FOUND", "cuid", "container %s not found", cuid);
	}
	if (rc != SQLITE_ROW)
		return cm_db_fail(db, err, "load container");
	s->image = strdup(cm_col_str(st, CC_IMAGE));
	s->command = strdup(cm_col_str(st, CC_COMMAND));
	s->env = strdup(cm_col_str(st, CC_ENV));
	s->tags = strdup(cm_col_str(st, CC_TAGS));
	s->ports = strdup(cm_col_str(st, CC_PORTS));
	s->volumes = strdup(cm_col_str(st, CC_VOLUMES) ? cm_col_str(st, CC_VOLUMES) : "[]");
	s->cpus = sqlite3_column_type(st, CC_CPUS) == SQLITE_NULL ? 0 : sqlite3_column_double(st, CC_CPUS);
	s->memory = sqlite3_column_int64(st, CC_MEMORY);
	s->pids = sqlite3_column_int64(st, CC_PIDS);
	if (version)
		*version = sqlite3_column_int64(st, CC_VERSION);
	if (status)
		snprintf(status, statussz, "%s", cm_col_str(st, CC_STATUS));
	sqlite3_reset(st);
	if (!s->image || !s->command || !s->env || !s->tags || !s->ports || !s->volumes) {
		cm_spec_free(s);
		return cm_err_internal(err, "out of memory");
	}
	return 0;
}

int cm_container_quota(struct cm_db *db, long max, const char *except_harpoon, struct cm_error *err)
{
	static const char *sql =
		"SELECT (SELECT count(*) FROM containers) "
		"+ (SELECT count(*) FROM harpoon WHERE state IN ('starting', 'running', 'stopping') "
		"   AND (?1 IS NULL OR image <> ?1)) "
		"+ (SELECT count(*) FROM apps) "
		"+ (SELECT count(*) FROM jobs WHERE kind = 'app.create' AND status IN ('queued', 'running') "
		"   AND cuid NOT IN (SELECT 'app:' || name FROM apps))";
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		return -1;
	if (except_harpoon)
		sqlite3_bind_text(st, 1, except_harpoon, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW) {
		cm_db_fail(db, err, "count containers");
		sqlite3_reset(st);
		return -1;
	}
	int64_t used = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (used < max)
		return 0;
	cm_err_set(err, 429, "limit_reached", "CONTAINER_LIMIT_REACHED", NULL,
		   "this instance already manages %lld containers (MAX_CONTAINERS is %ld); delete some first",
		   (long long)used, max);
	err->limit = max;
	err->used = used;
	return -1;
}

int64_t cm_job_insert(struct cm_db *db, const char *kind, const char *cuid, const char *args,
		      const char *request_id, const char *user, struct cm_error *err)
{
	static const char *sql = "INSERT INTO jobs(kind, cuid, args, request_id, user, created_at) "
				 "VALUES (?, ?, ?, ?, ?, ?)";
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, cuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, args ? args : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, request_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, cm_now_ms());
	if (sqlite3_step(st) != SQLITE_DONE)
		return cm_db_fail(db, err, "queue job");
	sqlite3_reset(st);
	return sqlite3_last_insert_rowid(db->h);
}

/* Connects to the runner and registers for job id. Returns the fd or -1. */
static int runner_connect(const char *path, int64_t id)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path) >= (int)sizeof sa.sun_path)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		close(fd);
		return -1;
	}
	char line[32];
	int n = snprintf(line, sizeof line, "%lld\n", (long long)id);
	if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return -1;
	}
	return fd;
}

int cm_job_cancel(struct cm_db *db, int64_t id, int status, const char *kind, const char *code, const char *message,
		  struct cm_error *err)
{
	static const char *sql = "UPDATE jobs SET status = 'cancelled', finished_at = ?1, err_status = ?3, "
				 "err_kind = ?4, err_code = ?5, err_message = ?6 WHERE id = ?2 AND status = 'queued'";
	/* a create that never ran leaves no row behind (its tags go with it) */
	static const char *drop = "DELETE FROM containers WHERE status = 'creating' AND cuid = "
				  "(SELECT cuid FROM jobs WHERE id = ? AND kind = 'create')";
	if (cm_db_begin(db, err) < 0)
		return -1;
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		goto fail;
	sqlite3_bind_int64(st, 1, cm_now_ms());
	sqlite3_bind_int64(st, 2, id);
	sqlite3_bind_int(st, 3, status);
	sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, code, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, message, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		cm_db_fail(db, err, "cancel job");
		goto fail;
	}
	int changed = sqlite3_changes(db->h);
	if (changed) {
		st = cm_db_stmt(db, drop, err);
		if (!st)
			goto fail;
		sqlite3_bind_int64(st, 1, id);
		if (sqlite3_step(st) != SQLITE_DONE) {
			cm_db_fail(db, err, "cancel job");
			goto fail;
		}
	}
	if (cm_db_commit(db, err) < 0)
		return -1;
	return changed ? 1 : 0;
fail:
	cm_db_rollback(db);
	return -1;
}

/* Cancels a job nobody has claimed. Returns 1 if cancelled, 0 if it was already claimed. */
static int cancel_if_queued(struct cm_db *db, int64_t id, struct cm_error *err)
{
	return cm_job_cancel(db, id, 503, "compose_error", "RUNNER_UNAVAILABLE", "the job runner is not running", err);
}

static int job_ended(struct cm_db *db, int64_t id, struct cm_error *err)
{
	static const char *sql = "SELECT status FROM jobs WHERE id = ?";
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	int ended = 0;
	if (rc == SQLITE_ROW) {
		const char *s = cm_col_str(st, 0);
		ended = strcmp(s, "queued") && strcmp(s, "running");
	} else if (rc != SQLITE_DONE) {
		return cm_db_fail(db, err, "read job");
	}
	sqlite3_reset(st);
	return ended;
}

int cm_job_wait(struct cm_db *db, const char *runner_sock, int64_t id, long timeout_s, struct cm_error *err)
{
	return cm_job_wait_while(db, runner_sock, id, timeout_s, NULL, NULL, err);
}

int cm_job_wait_while(struct cm_db *db, const char *runner_sock, int64_t id, long timeout_s,
		      bool (*go_on)(void *ud), void *ud, struct cm_error *err)
{
	bool cut = false;
	int64_t deadline = cm_monotonic_ms() + timeout_s * 1000;
	int64_t unreachable_since = -1;
	for (;;) {
		int fd = runner_connect(runner_sock, id);
		if (fd < 0) {
			int64_t now = cm_monotonic_ms();
			if (unreachable_since < 0)
				unreachable_since = now;
			if (now - unreachable_since > 3000 || now > deadline) {
				int r = cancel_if_queued(db, id, err);
				if (r < 0)
					return -1;
				if (r == 1)
					return cm_err_set(err, 503, "compose_error", "RUNNER_UNAVAILABLE", NULL,
							  "the job runner is not running; nothing was changed");
				/* claimed meanwhile: keep waiting for it */
				if (now > deadline)
					break;
			}
			if (go_on && !go_on(ud)) {
				cut = true;
				goto ended;
			}
			usleep(100 * 1000);
			continue;
		}
		unreachable_since = -1;
		char buf[64];
		size_t got = 0;
		bool done = false, lost = false;
		while (!done && !lost) {
			int64_t left = deadline - cm_monotonic_ms();
			if (left <= 0)
				break;
			if (go_on && !go_on(ud)) {
				cut = true;
				break;
			}
			struct pollfd p = {.fd = fd, .events = POLLIN};
			int pr = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
			if (pr < 0 && errno != EINTR) {
				lost = true;
			} else if (pr > 0) {
				ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
				if (n <= 0) {
					lost = true;
				} else {
					got += (size_t)n;
					if (memchr(buf, '\n', got))
						done = true;
					else if (got >= sizeof buf - 1)
						lost = true;
				}
			}
		}
		close(fd);
		if (done)
			return 0;
		/* runner went away (or deadline): if the job has ended anyway we are done */
	ended:;
		int e = job_ended(db, id, err);
		if (e < 0)
			return -1;
		if (e == 1)
			return 0;
		if (cut)
			return cm_err_set(err, 408, "timeout", "JOB_TIMEOUT", NULL,
					  "operation did not finish while this request could wait; it continues as job %lld",
					  (long long)id);
		if (cm_monotonic_ms() >= deadline)
			break;
		usleep(100 * 1000);
	}
	return cm_err_set(err, 408, "timeout", "JOB_TIMEOUT", NULL,
			  "operation did not finish within %ld s; it continues as job %lld", timeout_s, (long long)id);
}

void cm_job_poke(const char *runner_sock, int64_t id)
{
	int fd = runner_connect(runner_sock, id);
	if (fd >= 0)
		close(fd);
}

int cm_job_await(struct cm_db *db, const char *runner_sock, int64_t id, long timeout_ms, struct cm_error *err)
{
	int64_t deadline = cm_monotonic_ms() + timeout_ms;
	for (;;) {
		int e = job_ended(db, id, err);
		if (e != 0)
			return e;
		int64_t left = deadline - cm_monotonic_ms();
		if (left <= 0)
			return 0;
		int fd = runner_connect(runner_sock, id);
		if (fd < 0) {
			usleep(left > 200 ? 200 * 1000 : (useconds_t)left * 1000);
			continue;
		}
		/* the runner writes a line when the job has ended; re-checked at least every second */
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int pr = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
		close(fd);
		if (pr < 0 && errno != EINTR)
			usleep(100 * 1000);
	}
}

int cm_job_outcome(struct cm_db *db, int64_t id, char **result, struct cm_error *job_err, struct cm_error *err)
{
	static const char *sql = "SELECT status, result, err_status, err_kind, err_code, err_field, err_message "
				 "FROM jobs WHERE id = ?";
	*result = NULL;
	sqlite3_stmt *st = cm_db_stmt(db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) != SQLITE_ROW)
		return cm_db_fail(db, err, "read job outcome");
	int ok = !strcmp(cm_col_str(st, 0), "succeeded");
	if (ok) {
		const char *r = cm_col_str(st, 1);
		*result = strdup(r ? r : "{}");
	} else {
		cm_err_set(job_err, sqlite3_column_int(st, 2) ? sqlite3_column_int(st, 2) : 500,
			   cm_col_str(st, 3) ? cm_col_str(st, 3) : "compose_error",
			   cm_col_str(st, 4) ? cm_col_str(st, 4) : "JOB_FAILED", cm_col_str(st, 5), "%s",
			   cm_col_str(st, 6) ? cm_col_str(st, 6) : "the operation failed");
	}
	sqlite3_reset(st);
	return ok;
}
