/* build.c: image builds through the Engine API's /build, shared by start_container's
 * definitions and POST /images/build: the context streams from memory or a file, the output
 * is kept (its tail) in the builds table, flushed while the build runs so that
 * GET /jobs/{id}/log shows it as it happens, and the job's progress names the current step.
 * While the build runs, its whole output is also spooled to DATA/builds/log.BUILD_ID (removed
 * when the build ends): a follower (GET /jobs/{id}/log?follow=1) reads that file, so it sees
 * every byte however fast the output comes, not only what the 1 MiB tail still holds. */
#include "config.h"
#include "runner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUILD_LOG_MAX (1 << 20)
/* the spool for followers stops (with a line saying so) past this size: a runaway build must
 * not fill the disk */
#define BUILD_SPOOL_MAX (256LL << 20)
#define FLUSH_MS 500

struct build_io {
	struct ctx *c;
	const char *mem;
	size_t len, off;
	FILE *file;
	int64_t build_id;
	struct cm_buf log;     /* text output (tail kept) */
	struct cm_buf line;
	char error[512];
	char step[256];
	int64_t flushed_at;
	size_t flushed_len;
	bool got_id;
	bool read_error;
	int spool_fd;          /* DATA/builds/log.ID for followers, or -1 */
	long long spooled;
};

static const char spool_cut[] = "\n[container-manager: the followed log stops here: the build printed more than 256 MiB; "
				"the end of the log is in GET /jobs/{id}/log]\n";

/* Appends to the followers' spool; any failure stops the spool (with a note when there is room),
 * never the build. */
static void b_spool(struct build_io *b, const char *s, size_t n)
{
	if (b->spool_fd < 0)
		return;
	bool cut = b->spooled + (long long)n > BUILD_SPOOL_MAX;
	if (cut) {
		s = spool_cut;
		n = sizeof spool_cut - 1;
	}
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(b->spool_fd, s + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			cut = true;
			break;
		}
		off += (size_t)w;
	}
	b->spooled += (long long)off;
	if (cut) {
		close(b->spool_fd);
		b->spool_fd = -1;
	}
}

static size_t b_read(char *buf, size_t size, void *ud)
{
	struct build_io *b = ud;
	if (b->file) {
		size_t n = fread(buf, 1, size, b->file);
		if (n == 0 && ferror(b->file))
			b->read_error = true;
		return n;
	}
	size_t n = b->len - b->off < size ? b->len - b->off : size;
	memcpy(buf, b->mem + b->off, n);
	b->off += n;
	return n;
}

static void b_log(struct build_io *b, const char *s, size_t n)
{
	b_spool(b, s, n);
	if (b->log.len + n > BUILD_LOG_MAX) {
		/* keep the tail: the error is at the end */
		size_t drop = b->log.len + n - BUILD_LOG_MAX;
		if (drop > b->log.len)
			drop = b->log.len;
		memmove(b->log.data, b->log.data + drop, b->log.len - drop);
		b->log.len -= drop;
		b->flushed_len = 0;
	}
	cm_buf_append(&b->log, s, n > BUILD_LOG_MAX ? BUILD_LOG_MAX : n);
}

/* Writes the log so far into the build's row and the step into the job's progress. */
static void b_flush(struct build_io *b, bool force)
{
	int64_t now = cm_monotonic_ms();
	if (!force && (now - b->flushed_at < FLUSH_MS || b->log.len == b->flushed_len))
		return;
	b->flushed_at = now;
	b->flushed_len = b->log.len;
	struct cm_error err;
	if (b->build_id > 0) {
		sqlite3_stmt *st = cm_db_stmt(&b->c->db, "UPDATE builds SET log = ? WHERE id = ?", &err);
		if (st) {
			sqlite3_bind_text(st, 1, cm_buf_str(&b->log), (int)b->log.len, SQLITE_STATIC);
			sqlite3_bind_int64(st, 2, b->build_id);
			sqlite3_step(st); /* progress only: a busy database skips one update */
			sqlite3_reset(st);
		}
	}
	if (b->c->job_id > 0) {
		yajl_gen g = cm_jg_new();
		if (!g)
			return;
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "phase", "building");
		cm_jg_kv_str(g, "step", b->step[0] ? b->step : NULL);
		cm_jg_kv_int(g, "log_bytes", (long long)b->log.len);
		cm_jg_kv_int(g, "build_id", b->build_id);
		yajl_gen_map_close(g);
		char *js = cm_jg_finish(g);
		sqlite3_stmt *st = js ? cm_db_stmt(&b->c->db, "UPDATE jobs SET progress = ? WHERE id = ?", &err) : NULL;
		if (st) {
			sqlite3_bind_text(st, 1, js, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 2, b->c->job_id);
			sqlite3_step(st);
			sqlite3_reset(st);
		}
		free(js);
	}
}

static void b_line(struct build_io *b, const char *text, size_t len)
{
	struct cm_error e;
	yajl_val v = cm_json_parse(text, len, &e);
	if (!v) {
		b_log(b, text, len);
		b_log(b, "\n", 1);
		return;
	}
	const char *s = cm_json_get_str(v, "stream");
	const char *er = cm_json_get_str(v, "error");
	const char *st = cm_json_get_str(v, "status");
	if (s) {
		b_log(b, s, strlen(s));
		if (!strncmp(s, "Step ", 5)) {
			snprintf(b->step, sizeof b->step, "%s", s);
			b->step[strcspn(b->step, "\r\n")] = '\0';
		}
	}
	if (st) {
		b_log(b, st, strlen(st));
		b_log(b, "\n", 1);
	}
	if (er) {
		snprintf(b->error, sizeof b->error, "%s", er);
		b_log(b, "ERROR: ", 7);
		b_log(b, er, strlen(er));
		b_log(b, "\n", 1);
	}
	if (cm_json_get(cm_json_get(v, "aux"), "ID"))
		b->got_id = true;
	yajl_tree_free(v);
	b_flush(b, false);
}

static int b_body(const char *data, size_t len, void *ud)
{
	struct build_io *b = ud;
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\n') {
			if (b->line.len)
				b_line(b, b->line.data, b->line.len);
			b->line.len = 0;
		} else if (b->line.len < (1 << 20)) {
			cm_buf_append(&b->line, data + i, 1);
		}
	}
	return 0;
}

static int64_t build_row(struct ctx *c, const char *image, const char *hash, const char *tag, struct cm_error *err)
{
	static const char *sql = "INSERT INTO builds(image, hash, tag, status, job_id, started_at) VALUES (?, ?, ?, 'running', ?, ?)";
	for (int attempt = 0; attempt < 50; attempt++) {
		sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
		if (!st)
			return -1;
		sqlite3_bind_text(st, 1, image, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, tag, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, c->job_id);
		sqlite3_bind_int64(st, 5, cm_now_ms());
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			return sqlite3_last_insert_rowid(c->db.h);
		if (rc != SQLITE_BUSY)
			break;
		usleep(50000);
	}
	return cm_db_fail(&c->db, err, "record build");
}

static void build_done(struct ctx *c, int64_t id, bool ok, const char *log, const char *error)
{
	static const char *sql = "UPDATE builds SET status = ?, log = ?, error = ?, finished_at = ? WHERE id = ?";
	struct cm_error err;
	for (int attempt = 0; attempt < 50; attempt++) {
		sqlite3_stmt *st = cm_db_stmt(&c->db, sql, &err);
		if (!st)
			return;
		sqlite3_bind_text(st, 1, ok ? "succeeded" : "failed", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, log, -1, SQLITE_STATIC);
		if (error)
			sqlite3_bind_text(st, 3, error, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, cm_now_ms());
		sqlite3_bind_int64(st, 5, id);
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_BUSY)
			return;
		usleep(50000);
	}
}

int docker_image_exists(struct ctx *c, const char *tag, struct cm_error *err)
{
	struct cm_buf p = {0}, r = {.limit = 4 << 20};
	cm_buf_puts(&p, "/images/");
	cm_buf_urlenc(&p, tag);
	cm_buf_puts(&p, "/json");
	long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 60, err);
	cm_buf_free(&p);
	cm_buf_free(&r);
	if (st == 200)
		return 1;
	if (st == 404)
		return 0;
	return st < 0 ? -1 : cm_err_internal(err, "image inspect failed (%ld)", st);
}


/* BUILD_PIDS. The Engine API's (classic) /build takes memory, memswap, cpu shares, ulimits and
 * cgroupparent but no pids limit. ulimits nproc (RLIMIT_NPROC) is no substitute: the kernel does
 * not apply it to uid 0, which RUN steps usually are, and for other uids it counts every process
 * of that uid on the host. So every build step's container is created under a cgroup parent of
 * this instance, "cm-build-INSTANCE", whose pids.max is BUILD_PIDS: the processes of the
 * instance's builds running at once are bounded together (a fork bomb in a RUN step fails with
 * "can't fork"). That needs Docker's cgroupfs driver and a cgroup hierarchy this process may
 * write (a runner as root; the packaged units' ProtectControlGroups forbids it): elsewhere the
 * builds run without it, bounded by BUILD_MEMORY, and the runner says so at start. */
static int write_small(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	size_t n = strlen(text);
	ssize_t w = write(fd, text, n);
	int saved = errno;
	close(fd);
	errno = saved;
	return w == (ssize_t)n ? 0 : -1;
}

static pthread_mutex_t limits_mu = PTHREAD_MUTEX_INITIALIZER;
static bool limits_known; /* Docker's cgroup driver has been learnt (under limits_mu) */

static void limits_setup_locked(struct ctx *c)
{
	struct runner *rn = c->rn;
	rn->build_cgroup[0] = '\0';
	struct cm_buf r = {.limit = 4 << 20};
	struct cm_error err = {0};
	char driver[32] = "", version[8] = "1";
	if (cm_docker_call(&c->docker, "GET", "/info", NULL, &r, 30, &err) == 200) {
		yajl_val v = cm_json_parse(cm_buf_str(&r), r.len, &err);
		const char *d = v ? cm_json_get_str(v, "CgroupDriver") : NULL;
		const char *ver = v ? cm_json_get_str(v, "CgroupVersion") : NULL;
		snprintf(driver, sizeof driver, "%s", d ? d : "");
		if (ver)
			snprintf(version, sizeof version, "%s", ver);
		if (v)
			yajl_tree_free(v);
	}
	cm_buf_free(&r);
	if (!driver[0])
		return; /* Docker did not answer: asked again before the next build */
	limits_known = true;
	if (strcmp(driver, "cgroupfs")) {
		cm_warn("BUILD_PIDS is not applied: Docker's cgroup driver is '%s', not cgroupfs (builds are bounded by "
			"BUILD_MEMORY only)", driver);
		return;
	}
	char name[sizeof rn->build_cgroup], dir[PATH_MAX], file[PATH_MAX], val[32];
	bool v2 = !strcmp(version, "2");
	if (cm_pathf(name, sizeof name, "cm-build-%s", rn->instance) < 0 ||
	    cm_pathf(dir, sizeof dir, "/sys/fs/cgroup/%s%s", v2 ? "" : "pids/", name) < 0 ||
	    cm_pathf(file, sizeof file, "%s/pids.max", dir) < 0)
		return;
	snprintf(val, sizeof val, "%ld\n", rn->cfg.build_pids);
	if ((mkdir(dir, 0755) < 0 && errno != EEXIST) || write_small(file, val) < 0) {
		cm_warn("BUILD_PIDS is not applied: cannot set up the cgroup %s: %s (builds are bounded by BUILD_MEMORY "
			"only)", dir, strerror(errno));
		return;
	}
	/* Docker joins the parent's path under every controller's hierarchy */
	snprintf(rn->build_cgroup, sizeof rn->build_cgroup, "/%s", name);
	cm_info("image builds: memory %lld bytes per step, at most %ld processes in cgroup %s",
		(long long)rn->cfg.build_memory, rn->cfg.build_pids, dir);
}

/* build_limits_setup, then a copy of the cgroup parent ("" = none) taken under the lock */
static void limits_current(struct ctx *c, char *out, size_t outsz)
{
	pthread_mutex_lock(&limits_mu);
	if (!limits_known)
		limits_setup_locked(c);
	snprintf(out, outsz, "%s", c->rn->build_cgroup);
	pthread_mutex_unlock(&limits_mu);
}

void build_limits_setup(struct ctx *c)
{
	char unused[sizeof c->rn->build_cgroup];
	limits_current(c, unused, sizeof unused);
}

void build_limits_teardown(struct runner *rn)
{
	if (!rn->build_cgroup[0])
		return;
	/* Docker created the parent under every v1 hierarchy (v2: the one); rmdir removes only
	 * empty ones, so a build still running elsewhere keeps its cgroup */
	DIR *d = opendir("/sys/fs/cgroup");
	struct dirent *e;
	char p[PATH_MAX];
	while (d && (e = readdir(d))) {
		if (e->d_name[0] != '.' && cm_pathf(p, sizeof p, "/sys/fs/cgroup/%s%s", e->d_name, rn->build_cgroup) == 0)
			rmdir(p);
	}
	if (d)
		closedir(d);
	if (cm_pathf(p, sizeof p, "/sys/fs/cgroup%s", rn->build_cgroup) == 0)
		rmdir(p);
}

int docker_build(struct ctx *c, const struct build_opts *o, char *image_id, struct cm_error *err)
{
	int64_t bid = build_row(c, o->name, o->hash, o->tag, err);
	if (bid < 0)
		return -1;
	struct cm_buf path = {0};
	cm_buf_puts(&path, "/build?rm=1&forcerm=1&dockerfile=");
	cm_buf_urlenc(&path, o->dockerfile);
	cm_buf_puts(&path, "&t=");
	cm_buf_urlenc(&path, o->tag);
	if (o->labels_json) {
		cm_buf_puts(&path, "&labels=");
		cm_buf_urlenc(&path, o->labels_json);
	}
	/* every RUN step's container: BUILD_MEMORY with no swap beyond it, and BUILD_PIDS (above;
	 * set up at start, or now when Docker did not answer then) */
	char cgroup[sizeof c->rn->build_cgroup];
	limits_current(c, cgroup, sizeof cgroup);
	cm_buf_printf(&path, "&memory=%lld&memswap=%lld", (long long)c->rn->cfg.build_memory,
		      (long long)c->rn->cfg.build_memory);
	if (cgroup[0]) {
		cm_buf_puts(&path, "&cgroupparent=");
		cm_buf_urlenc(&path, cgroup);
	}
	struct build_io b = {.c = c, .mem = o->mem, .len = o->mem_len, .file = o->file, .build_id = bid, .spool_fd = -1};
	char spool[PATH_MAX], dir[PATH_MAX];
	if (cm_config_path(&c->rn->cfg, dir, sizeof dir, "builds") == 0 &&
	    cm_pathf(spool, sizeof spool, "%s/log.%lld", dir, (long long)bid) == 0) {
		b.spool_fd = open(spool, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (b.spool_fd < 0)
			cm_warn("build %lld: no log spool for followers: %s", (long long)bid, strerror(errno));
	} else {
		spool[0] = '\0';
	}
	struct cm_docker_io io = {.read = b_read, .body = b_body, .ud = &b};
	cm_info("building %s for %s", o->tag, o->what);
	long st = cm_docker_exchange(&c->docker, "POST", cm_buf_str(&path), &io, 3600, err);
	cm_buf_free(&path);
	if (b.line.len)
		b_line(&b, b.line.data, b.line.len);
	int rc = 0;
	if (b.read_error) {
		snprintf(b.error, sizeof b.error, "the build context could not be read");
		rc = cm_err_internal(err, "%s", b.error);
	} else if (st < 0) {
		snprintf(b.error, sizeof b.error, "%s", err->message);
		rc = -1;
	} else if (st != 200) {
		char msg[400] = "";
		cm_docker_message(cm_buf_str(&b.log), msg, sizeof msg);
		snprintf(b.error, sizeof b.error, "Docker answered %ld: %s", st, msg[0] ? msg : cm_buf_str(&b.log));
		rc = cm_err_set(err, 422, "build_error", "BUILD_FAILED", "image", "building %s failed: %s", o->what, b.error);
	} else if (b.error[0]) {
		rc = cm_err_set(err, 422, "build_error", "BUILD_FAILED", "image", "building %s failed: %s", o->what, b.error);
	} else {
		/* the stream may end without an error line when the build was cut short */
		int e2 = docker_image_exists(c, o->tag, err);
		if (e2 <= 0) {
			snprintf(b.error, sizeof b.error, "the build ended without producing %s", o->tag);
			rc = e2 < 0 ? -1 : cm_err_set(err, 422, "build_error", "BUILD_FAILED", "image", "%s", b.error);
		}
	}
	if (rc == 0 && image_id) {
		struct cm_buf p = {0}, r = {.limit = 4 << 20};
		cm_buf_puts(&p, "/images/");
		cm_buf_urlenc(&p, o->tag);
		cm_buf_puts(&p, "/json");
		struct cm_error e3;
		image_id[0] = '\0';
		if (cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 60, &e3) == 200) {
			yajl_val v = cm_json_parse(cm_buf_str(&r), r.len, &e3);
			snprintf(image_id, 80, "%s", v && cm_json_get_str(v, "Id") ? cm_json_get_str(v, "Id") : "");
			if (v)
				yajl_tree_free(v);
		}
		cm_buf_free(&p);
		cm_buf_free(&r);
	}
	b_flush(&b, true);
	/* every byte is in the spool before the row says the build ended: a follower that sees the
	 * end reads the file to its end once more and has it all; an open file outlives the unlink */
	if (b.spool_fd >= 0)
		close(b.spool_fd);
	build_done(c, bid, rc == 0, cm_buf_str(&b.log), rc == 0 ? NULL : b.error);
	if (spool[0])
		unlink(spool);
	cm_buf_free(&b.log);
	cm_buf_free(&b.line);
	return rc;
}
