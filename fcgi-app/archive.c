/* archive.c: any path of the container's own filesystem as a tar stream, through the
 * Engine API's archive endpoints (GET/HEAD/PUT /containers/{id}/archive). These are
 * streams, so the worker talks to dockerd directly instead of queueing a job. */
#include "config.h"
#include "app.h"
#include "docker.h"
#include "bindpath.h"
#include "files.h"
#include "paths.h"
#include "staging.h"
#include "tarclean.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct cm_docker docker;
static bool docker_ready;

struct cm_docker *cm_app_docker(struct cm_req *r, struct cm_error *err)
{
	if (!docker_ready) {
		if (cm_docker_init(&docker, r->app->cfg.docker_host, err) < 0)
			return NULL;
		docker_ready = true;
	}
	return &docker;
}

long cm_app_docker_get(struct cm_req *r, const char *path, yajl_val *v)
{
	struct cm_error err = {0};
	*v = NULL;
	struct cm_docker *d = cm_app_docker(r, &err);
	struct cm_buf resp = {.limit = 32 << 20};
	long st = d ? cm_docker_call(d, "GET", path, NULL, &resp, 60, &err) : -1;
	if (st == 200 && !(*v = cm_json_parse(cm_buf_str(&resp), resp.len, &err)))
		st = -1;
	if (st < 0)
		cm_respond_error(r, &err, NULL);
	cm_buf_free(&resp);
	return st;
}

/* The container's Docker id from its row (404 when there is no row). */
static int docker_id(struct cm_req *r, const char *cuid, char *out, size_t outsz, struct cm_error *err)
{
	static const char *sql = "SELECT docker_id FROM containers WHERE cuid = ?";
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && cm_col_str(st, 0))
		snprintf(out, outsz, "%s", cm_col_str(st, 0));
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return cm_err_set(err, 404, "not_found", "CONTAINER_NOT_FOUND", "cuid", "container %s not found", cuid);
	if (rc != SQLITE_ROW)
		return cm_db_fail(&r->app->db, err, "read container");
	if (!out[0])
		return cm_err_set(err, 409, "conflict", "CONTAINER_NOT_READY", NULL, "container %s is still being created", cuid);
	return 0;
}

/* Checks ?path= (absolute, inside the container) and builds the Docker request path. */
static int archive_path(struct cm_req *r, const char *id, char *out, size_t outsz, struct cm_error *err)
{
	const char *p = cm_req_query(r, "path");
	if (!p || p[0] != '/')
		return cm_err_validation(err, "INVALID_PATH", "path", "path must be an absolute path inside the container");
	size_t n = strlen(p);
	if (n > 4096)
		return cm_err_validation(err, "INVALID_PATH", "path", "path is longer than 4096 bytes");
	for (const unsigned char *c = (const unsigned char *)p; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return cm_err_validation(err, "INVALID_PATH", "path", "path contains a control character");
	char *esc = curl_easy_escape(NULL, p, (int)n);
	if (!esc)
		return cm_err_internal(err, "out of memory");
	int rc = cm_pathf(out, outsz, "/containers/%s/archive?path=%s", id, esc);
	curl_free(esc);
	return rc < 0 ? cm_err_validation(err, "INVALID_PATH", "path", "path is too long") : 0;
}

struct pull {
	struct cm_req *r;
	long status;
	char stat_json[2048];
	struct cm_buf errbody;
	bool started;
	bool head;
};

static void pull_header(const char *line, size_t len, void *ud)
{
	struct pull *p = ud;
	static const char key[] = "X-Docker-Container-Path-Stat:";
	if (len > 9 && !strncmp(line, "HTTP/", 5)) {
		const char *sp = memchr(line, ' ', len);
		if (sp)
			p->status = strtol(sp + 1, NULL, 10);
	} else if (len > sizeof key && !strncasecmp(line, key, sizeof key - 1)) {
		const char *v = line + sizeof key - 1;
		size_t vl = len - (sizeof key - 1);
		while (vl && (*v == ' '))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
			vl--;
		char json[2048];
		/* Docker's stat is base64 JSON; we pass it on as one line of JSON */
		if (cm_b64_decode(json, sizeof json, v, vl) > 0 && cm_valid_utf8(json, strlen(json)) &&
		    !strpbrk(json, "\r\n"))
			snprintf(p->stat_json, sizeof p->stat_json, "%s", json);
	}
}

static int pull_body(const char *data, size_t len, void *ud)
{
	struct pull *p = ud;
	if (p->status != 200) {
		if (p->errbody.len < 4096)
			cm_buf_append(&p->errbody, data, len < 4096 ? len : 4096);
		return 0;
	}
	if (!p->started) {
		char hdr[2200];
		snprintf(hdr, sizeof hdr, "X-Container-Path-Stat: %s\r\n", p->stat_json[0] ? p->stat_json : "{}");
		cm_respond_start(p->r, 200, "application/x-tar", hdr, -1);
		p->started = true;
	}
	return FCGX_PutStr(data, (int)len, p->r->fr->out) < 0 ? 1 : 0;
}

static void docker_status_error(struct cm_req *r, long status, const char *body, const char *what)
{
	char msg[400];
	cm_docker_message(body, msg, sizeof msg);
	if (status == 404)
		cm_respond_errorf(r, 404, "not_found", "PATH_NOT_FOUND", "path", "%s: %s", what, msg);
	else if (status == 400)
		cm_respond_errorf(r, 400, "validation_error", "INVALID_ARCHIVE", NULL, "%s: %s", what, msg);
	else if (status == 403)
		cm_respond_errorf(r, 403, "forbidden", "READ_ONLY", "path", "%s: %s", what, msg);
	else if (status == 409)
		cm_respond_errorf(r, 409, "conflict", "CONFLICT", "path", "%s: %s", what, msg);
	else
		cm_respond_errorf(r, 500, "compose_error", "DOCKER_ERROR", NULL, "%s failed (Docker %ld): %s", what, status, msg);
}

/* Docker's archive endpoints mount the container's binds again, resolving their source paths
 * anew (even for a running container): each bind must still be the path checked when the
 * container was defined (bindpath.h), else 409 BIND_SOURCE_CHANGED. */
static int binds_unchanged(struct cm_req *r, const char *cuid, struct cm_error *err)
{
	static const char *sql = "SELECT json_extract(j.value, '$.source') FROM containers c, json_each(c.volumes) j "
				 "WHERE c.cuid = ? AND json_extract(j.value, '$.type') = 'bind'";
	sqlite3_stmt *st = cm_db_stmt(&r->app->db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = 0, step;
	char why[400];
	while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
		const char *src = cm_col_str(st, 0);
		if (src && cm_bind_verify(&r->app->cfg, src, geteuid(), why, sizeof why) != CM_BIND_OK)
			rc = cm_err_set(err, 409, "conflict", "BIND_SOURCE_CHANGED", "volumes",
					"refusing to mount: %s (it was checked when the container was defined)", why);
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = cm_db_fail(&r->app->db, err, "read binds");
	sqlite3_reset(st);
	return rc;
}

/* The Docker client and request path for the container's ?path=; answers the error itself
 * and returns NULL when the container, the path or Docker is not usable. */
static struct cm_docker *archive_target(struct cm_req *r, const char *cuid, char *path, size_t pathsz)
{
	struct cm_error err = {0};
	char id[128] = "";
	struct cm_docker *d = NULL;
	if (docker_id(r, cuid, id, sizeof id, &err) < 0 || archive_path(r, id, path, pathsz, &err) < 0 ||
	    binds_unchanged(r, cuid, &err) < 0 || !(d = cm_app_docker(r, &err))) {
		cm_respond_error(r, &err, NULL);
		return NULL;
	}
	return d;
}

void h_container_archive_get(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	char path[3 * 4096 + 256]; /* "/containers/ID/archive?path=" and a 4096-byte path escaped (3 bytes each at most) */
	struct cm_docker *d = cuid ? archive_target(r, cuid, path, sizeof path) : NULL;
	if (!d)
		return;
	struct cm_error err = {0};
	struct pull p = {.r = r, .head = !strcmp(r->method, "HEAD")};
	struct cm_docker_io io = {NULL, pull_header, pull_body, &p};
	long st = cm_docker_exchange(d, p.head ? "HEAD" : "GET", path, &io, 60, &err);
	if (st < 0 && !p.started) {
		cm_respond_error(r, &err, NULL);
	} else if (p.head && st == 200) {
		char hdr[2200];
		snprintf(hdr, sizeof hdr, "X-Container-Path-Stat: %s\r\n", p.stat_json[0] ? p.stat_json : "{}");
		cm_respond_start(r, 200, "application/x-tar", hdr, -1);
	} else if (!p.started && st == 200) {
		/* an empty tar stream: still a success */
		cm_respond(r, 200, "application/x-tar", NULL, "", 0);
	} else if (!p.started) {
		docker_status_error(r, st, cm_buf_str(&p.errbody), "reading the archive");
	} else if (st < 0) {
		cm_warn("archive download of %s stopped: %s", cuid, err.message);
	}
	cm_buf_free(&p.errbody);
}

/* ---- PUT: the body is rewritten by cm_tarclean into the container's private working directory
 * (DATA/containers/<cuid>/.upload-<tag>/body.tar, locked: lib/staging.h), and only a tar that
 * was read to its end is sent to Docker: a refused or broken body extracts nothing. */

struct body_src {
	struct cm_req *r;
	long long got; /* bytes of the body read */
	char buf[IO_CHUNK];
};

static ssize_t body_read(void *ud, const void **buf)
{
	struct body_src *b = ud;
	int n = FCGX_GetStr(b->buf, sizeof b->buf, b->r->fr->in);
	*buf = b->buf;
	if (n > 0)
		b->got += n;
	return n > 0 ? n : 0;
}

/* Whether the whole body arrived: a client that hung up after an entry would otherwise look
 * like a tar that ended there (libarchive takes EOF at a header boundary as the end). */
static bool body_complete(const struct body_src *b)
{
	const char *cl = cm_req_header(b->r, "CONTENT_LENGTH");
	if (FCGX_GetError(b->r->fr->in) != 0)
		return false;
	if (!cl || !*cl)
		return true; /* (chunked: nginx aborts the request when the client goes away) */
	char *end;
	long long want = strtoll(cl, &end, 10);
	return *end == '\0' && want == b->got;
}

struct push {
	int fd;
	struct cm_buf body;
};

static size_t push_read(char *buf, size_t size, void *ud)
{
	struct push *p = ud;
	for (;;) {
		ssize_t n = read(p->fd, buf, size > (1 << 20) ? (1 << 20) : size);
		if (n < 0 && errno == EINTR)
			continue;
		return n > 0 ? (size_t)n : (n == 0 ? 0 : CURL_READFUNC_ABORT);
	}
}

static int push_body(const char *data, size_t len, void *ud)
{
	struct push *p = ud;
	if (p->body.len < 4096)
		cm_buf_append(&p->body, data, len < 4096 ? len : 4096);
	return 0;
}

/* Where ?path= is inside /app (the bind of the host directory): app/ and the path below it. */
struct app_dest {
	int app;
	char base[4200];
};

/* Whether dir (relative to the destination) is missing on the host: Docker would make it root's. */
static bool app_dir_missing(void *ud, const char *dir)
{
	struct app_dest *a = ud;
	char rel[8500];
	if (cm_pathf(rel, sizeof rel, "%s%s%s", a->base, a->base[0] ? "/" : "", dir) < 0)
		return false;
	int fd = cm_open_beneath(a->app, rel, O_PATH, 0);
	if (fd >= 0) {
		close(fd);
		return false;
	}
	return errno == ENOENT;
}

/* Rewrites the body into stg/body.tar (t gets the counts); the fd is left at the start. */
static int stage_body(struct cm_req *r, int stg, struct cm_tarclean *t, int *fd, struct cm_error *err)
{
	const struct cm_config *cfg = &r->app->cfg;
	unsigned uid, gid;
	cm_parse_uid(cfg->default_uid, &uid, &gid);
	t->uid = uid;
	t->gid = gid;
	t->max_in = cfg->upload_max_bytes;
	t->max_out = cfg->upload_max_unpacked;
	t->max_entries = cfg->upload_max_entries;
	*fd = openat(stg, "body.tar", O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (*fd < 0)
		return cm_files_path_error(err, errno, "(archive)");
	struct body_src *b = malloc(sizeof *b);
	if (!b)
		return cm_err_internal(err, "out of memory");
	b->r = r;
	b->got = 0;
	int rc = cm_tarclean(body_read, b, *fd, t, err);
	if (rc == 0 && !body_complete(b))
		rc = cm_err_validation(err, "INVALID_ARCHIVE", "body", "the body ended before its Content-Length: nothing was extracted");
	free(b);
	if (rc == 0 && lseek(*fd, 0, SEEK_SET) < 0)
		rc = cm_files_path_error(err, errno, "(archive)");
	return rc;
}

void h_container_archive_put(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid || cm_refuse_async(r, "the archive streams to Docker while its body arrives")) {
		cm_req_drain(r);
		return;
	}
	struct cm_error err = {0};
	char path[3 * 4096 + 256]; /* "/containers/ID/archive?path=" and a 4096-byte path escaped (3 bytes each at most) */
	char tag[CM_STAGE_TAG_LEN], stg_name[64] = "";
	struct cm_docker *d;
	const char *ct = cm_req_header(r, "CONTENT_TYPE");
	if (!ct || (strncasecmp(ct, "application/x-tar", 17) && strncasecmp(ct, "application/tar", 15))) {
		cm_req_drain(r);
		cm_respond_errorf(r, 400, "validation_error", "INVALID_CONTENT_TYPE", "Content-Type",
				  "send a tar archive as Content-Type: application/x-tar");
		return;
	}
	const char *cl = cm_req_header(r, "CONTENT_LENGTH");
	if (cl && *cl && strtoll(cl, NULL, 10) > r->app->cfg.upload_max_bytes) {
		cm_req_drain(r);
		cm_err_set(&err, 413, "payload_too_large", "BODY_TOO_LARGE", NULL, "the archive is larger than allowed (limit %lld)",
			   (long long)r->app->cfg.upload_max_bytes);
		err.limit = r->app->cfg.upload_max_bytes;
		cm_respond_error(r, &err, NULL);
		return;
	}
	if (!(d = archive_target(r, cuid, path, sizeof path))) {
		cm_req_drain(r);
		return;
	}
	int cdir = -1, app = -1, stg = -1, fd = -1;
	struct cm_tarclean t = {0};
	struct push p = {.fd = -1};
	if (cm_files_open_dirs(r, cuid, &cdir, &app, &err) < 0)
		goto fail_drain;
	if (cm_stage_tag(tag) < 0 || (stg = cm_stage_mkdir(cdir, ".upload-", tag)) < 0) {
		cm_files_path_error(&err, errno, ".upload");
		goto fail_drain;
	}
	snprintf(stg_name, sizeof stg_name, ".upload-%s", tag);
	/* into /app: the parents the archive implies are made as the container user's, not root's */
	struct app_dest dest = {.app = app};
	struct cm_error ignored;
	const char *qp = cm_req_query(r, "path");
	if (qp && !strncmp(qp, "/app", 4) && (qp[4] == '\0' || qp[4] == '/') &&
	    cm_path_normalize(qp, dest.base, sizeof dest.base, &ignored) == 0) {
		t.dir_missing = app_dir_missing;
		t.dir_ud = &dest;
	}
	if (stage_body(r, stg, &t, &fd, &err) < 0)
		goto fail_drain;
	cm_req_drain(r); /* what follows the tar's end (its last block's padding) */
	p.fd = fd;
	struct cm_docker_io io = {push_read, NULL, push_body, &p};
	long st = cm_docker_exchange(d, "PUT", path, &io, 60, &err);
	if (st < 0) {
		goto fail;
	} else if (st == 200) {
		yajl_gen g = cm_jg_new();
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "cuid", cuid);
		cm_jg_kv_str(g, "path", cm_req_query(r, "path"));
		cm_jg_kv_int(g, "entries", t.entries);
		cm_jg_kv_int(g, "bytes", t.bytes);
		/* devices, FIFOs and sockets are left out, not refused: say which */
		cm_jg_str(g, "skipped");
		cm_jg_raw(g, t.skipped_json.len ? cm_buf_str(&t.skipped_json) : "[]");
		cm_jg_kv_int(g, "skipped_count", t.skipped);
		yajl_gen_map_close(g);
		cm_respond_gen(r, 200, g);
	} else {
		docker_status_error(r, st, cm_buf_str(&p.body), "writing the archive");
	}
	goto out;
fail_drain:
	cm_req_drain(r);
fail:
	cm_respond_error(r, &err, NULL);
out:
	if (fd >= 0)
		close(fd);
	if (cdir >= 0 && stg_name[0] && cm_rm_rf_at(cdir, stg_name) < 0)
		cm_warn("could not remove %s of %s", stg_name, cuid);
	if (stg >= 0)
		close(stg);
	if (app >= 0)
		close(app);
	if (cdir >= 0)
		close(cdir);
	cm_buf_free(&t.skipped_json);
	cm_buf_free(&p.body);
}
