/* images.c: the jobs behind /images and commit.
 *
 *   image.build  {context, tag, dockerfile, build_dir}  re-pack the uploaded context and build
 *   image.delete {ref}                                  remove an image (Docker refuses in use)
 *   commit       {repository, tag, comment}             a container's filesystem as an image
 *
 * Build jobs take the key "image:TAG" (builds of one tag run in order). The uploaded context
 * lives in DATA/builds/ until its job ends (a sweep at start removes orphans). */
#include "config.h"
#include "runner.h"
#include "buildctx.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Path of a context file named in args, checked to be a plain name inside DATA/builds. */
int context_path(struct ctx *c, const char *name, char *out, size_t outsz, struct cm_error *err)
{
	if (!name || !*name || strchr(name, '/') || name[0] == '.' || strlen(name) > 64)
		return cm_err_internal(err, "malformed build context name");
	if (cm_config_path(&c->rn->cfg, out, outsz, "builds") < 0 ||
	    strlen(out) + 1 + strlen(name) >= outsz)
		return cm_err_internal(err, "path too long");
	strcat(out, "/");
	strcat(out, name);
	return 0;
}

struct repack_arg {
	const char *path;
	const struct cm_buildctx *b;
	int fd;
	int rc;
	struct cm_error err;
};

/* Re-packs into the pipe while the Engine API reads the other end: no temporary copy. */
static void *repack_thread(void *p)
{
	struct repack_arg *a = p;
	a->rc = cm_buildctx_repack(a->path, a->b, a->fd, &a->err);
	close(a->fd);
	return NULL;
}

int build_context(struct ctx *c, const char *path, const char *build_dir, const char *dockerfile, const char *tag,
		  const char *what, char image_id[80], char *used_dockerfile, size_t udsz, struct cm_error *err)
{
	if (access(path, R_OK) != 0)
		return cm_err_set(err, 410, "gone", "CONTEXT_GONE", NULL, "the uploaded build context is gone (%s)",
				  strerror(errno));
	struct cm_buildctx b = {.max_unpacked = c->rn->cfg.upload_max_unpacked,
				.max_entries = c->rn->cfg.upload_max_entries};
	if (cm_pathf(b.build_dir, sizeof b.build_dir, "%s", build_dir ? build_dir : "") < 0 ||
	    cm_pathf(b.dockerfile, sizeof b.dockerfile, "%s", dockerfile ? dockerfile : "") < 0)
		return cm_err_validation(err, "INVALID_VALUE", "build_dir", "build_dir or dockerfile is too long");
	int rc = -1;
	FILE *f = NULL;
	pthread_t th;
	bool threaded = false;
	struct repack_arg ra = {.path = path, .b = &b, .fd = -1};
	if (cm_buildctx_scan(path, &b, err) < 0)
		goto out;
	if (b.tar && !b.build_dir[0]) {
		/* a tar of the whole context (compressed or not) is what /build takes as it is */
		f = fopen(path, "rbe");
	} else {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			cm_err_internal(err, "pipe: %s", strerror(errno));
			goto out;
		}
		ra.fd = p[1];
		if (pthread_create(&th, NULL, repack_thread, &ra) != 0) {
			close(p[0]);
			close(p[1]);
			cm_err_internal(err, "cannot start the re-packing");
			goto out;
		}
		threaded = true;
		f = fdopen(p[0], "rb");
		if (!f)
			close(p[0]);
	}
	if (!f) {
		cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot read the build context: %s", strerror(errno));
		goto out;
	}
	struct build_opts o = {.name = tag, .hash = "upload", .tag = tag, .dockerfile = b.dockerfile, .what = what, .file = f};
	int brc = docker_build(c, &o, image_id, err);
	if (threaded) {
		/* Docker stopped reading (a failed build): unblock the writer, then wait for it */
		fclose(f);
		f = NULL;
		pthread_join(th, NULL);
		threaded = false;
		/* a context refused while re-packing (too large, corrupt) is the cause; a write error
		 * is only the echo of Docker giving up, whose own error is the cause */
		if (ra.rc < 0 && (brc == 0 || ra.err.status != 500)) {
			*err = ra.err;
			goto out;
		}
	}
	if (brc < 0)
		goto out;
	if (used_dockerfile)
		snprintf(used_dockerfile, udsz, "%s", b.dockerfile);
	rc = 0;
out:
	if (f)
		fclose(f);
	if (threaded)
		pthread_join(th, NULL);
	return rc;
}

static int job_build(struct ctx *c, yajl_val args, char **result, struct cm_error *err)
{
	const char *name = cm_json_get_str(args, "context"), *tag = cm_json_get_str(args, "tag");
	char path[PATH_MAX];
	if (!tag || context_path(c, name, path, sizeof path, err) < 0)
		return tag ? -1 : cm_err_internal(err, "build job without a tag");
	char what[300], image_id[80] = "", dockerfile[1024] = "";
	snprintf(what, sizeof what, "image %s", tag);
	int rc = build_context(c, path, cm_json_get_str(args, "build_dir"), cm_json_get_str(args, "dockerfile"), tag, what,
			       image_id, dockerfile, sizeof dockerfile, err);
	unlink(path);
	if (rc < 0)
		return -1;
	struct cm_buf r = {0};
	cm_buf_printf(&r, "{\"image_id\":\"%s\",\"tag\":\"%s\",\"dockerfile\":", image_id, tag);
	yajl_gen g = cm_jg_new();
	if (g) {
		cm_jg_str(g, dockerfile);
		char *js = cm_jg_finish(g);
		cm_buf_puts(&r, js ? js : "null");
		free(js);
	}
	cm_buf_printf(&r, ",\"log_url\":\"/jobs/%lld/log\"}", (long long)c->job_id);
	*result = r.data;
	return *result ? 0 : cm_err_internal(err, "out of memory");
}

static int job_image_delete(struct ctx *c, yajl_val args, char **result, struct cm_error *err)
{
	const char *ref = cm_json_get_str(args, "ref");
	if (!ref)
		return cm_err_internal(err, "image.delete without a ref");
	struct cm_buf p = {0}, r = {.limit = 4 << 20};
	cm_buf_puts(&p, "/images/");
	cm_buf_urlenc(&p, ref);
	long st = cm_docker_call(&c->docker, "DELETE", cm_buf_str(&p), NULL, &r, 120, err);
	cm_buf_free(&p);
	int rc = -1;
	char msg[400] = "";
	if (st > 0 && st != 200)
		cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
	if (st == 200) {
		struct cm_buf out = {0};
		cm_buf_printf(&out, "{\"ref\":\"%s\",\"removed\":%s}", ref, r.len ? cm_buf_str(&r) : "[]");
		*result = out.data;
		rc = *result ? 0 : cm_err_internal(err, "out of memory");
	} else if (st == 404) {
		cm_err_set(err, 404, "not_found", "IMAGE_NOT_FOUND", "ref", "image %s not found", ref);
	} else if (st == 409) {
		cm_err_set(err, 409, "conflict", "IMAGE_IN_USE", "ref", "image %s is in use: %s", ref, msg);
	} else if (st > 0) {
		cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", "ref", "Docker refused to remove %s: %s", ref, msg);
	}
	cm_buf_free(&r);
	return rc;
}

int job_commit(struct ctx *c, const char *cuid, yajl_val args, char **result, struct cm_error *err)
{
	static const char *sel = "SELECT docker_id FROM containers WHERE cuid = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, sel, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	char id[80] = "";
	if (sqlite3_step(st) == SQLITE_ROW && cm_col_str(st, 0))
		snprintf(id, sizeof id, "%s", cm_col_str(st, 0));
	sqlite3_reset(st);
	if (!id[0])
		return cm_err_set(err, 409, "conflict", "CONTAINER_MISSING", "cuid", "container %s has no Docker container", cuid);
	const char *repo = cm_json_get_str(args, "repository"), *tag = cm_json_get_str(args, "tag");
	const char *comment = cm_json_get_str(args, "comment");
	struct cm_buf p = {0}, r = {.limit = 1 << 20};
	cm_buf_printf(&p, "/commit?container=%s&pause=1&repo=", id);
	cm_buf_urlenc(&p, repo ? repo : "");
	cm_buf_puts(&p, "&tag=");
	cm_buf_urlenc(&p, tag ? tag : "latest");
	if (comment) {
		cm_buf_puts(&p, "&comment=");
		cm_buf_urlenc(&p, comment);
	}
	long hs = cm_docker_call(&c->docker, "POST", cm_buf_str(&p), "{}", &r, 600, err);
	cm_buf_free(&p);
	int rc = -1;
	if (hs == 201 || hs == 200) {
		yajl_val v = cm_json_parse(cm_buf_str(&r), r.len, err);
		const char *iid = v ? cm_json_get_str(v, "Id") : NULL;
		struct cm_buf out = {0};
		cm_buf_printf(&out, "{\"image_id\":\"%s\",\"repository\":\"%s\",\"tag\":\"%s\",\"cuid\":\"%s\"}", iid ? iid : "",
			      repo ? repo : "", tag ? tag : "latest", cuid);
		if (v)
			yajl_tree_free(v);
		*result = out.data;
		rc = *result ? 0 : cm_err_internal(err, "out of memory");
	} else if (hs > 0) {
		char msg[400] = "";
		cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
		cm_err_set(err, hs == 404 ? 409 : 500, hs == 404 ? "conflict" : "compose_error",
			   hs == 404 ? "CONTAINER_MISSING" : "COMMIT_FAILED", NULL, "commit of %s failed: %s", cuid, msg);
	}
	cm_buf_free(&r);
	return rc;
}

/* volume.create {name, labels}: 409 when it exists; the instance label marks it as made here. */
static int job_volume_create(struct ctx *c, yajl_val args, char **result, struct cm_error *err)
{
	const char *name = cm_json_get_str(args, "name");
	if (!name)
		return cm_err_internal(err, "volume.create without a name");
	struct cm_buf p = {0}, r = {.limit = 1 << 20};
	cm_buf_puts(&p, "/volumes/");
	cm_buf_urlenc(&p, name);
	long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 30, err);
	cm_buf_free(&p);
	r.len = 0;
	if (st == 200) {
		cm_buf_free(&r);
		return cm_err_set(err, 409, "conflict", "VOLUME_EXISTS", "name", "volume %s already exists", name);
	}
	if (st != 404) {
		cm_buf_free(&r);
		return st < 0 ? -1 : cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", "name", "volume inspect failed (%ld)", st);
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "Name", name);
	cm_jg_str(g, "Labels");
	yajl_gen_map_open(g);
	yajl_val labels = cm_json_get(args, "labels");
	for (size_t i = 0; YAJL_IS_OBJECT(labels) && i < labels->u.object.len; i++)
		if (YAJL_IS_STRING(labels->u.object.values[i]))
			cm_jg_kv_str(g, labels->u.object.keys[i], labels->u.object.values[i]->u.string);
	cm_jg_kv_str(g, "io.container-manager.instance", c->rn->instance);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	char *body = cm_jg_finish(g);
	st = body ? cm_docker_call(&c->docker, "POST", "/volumes/create", body, &r, 60, err) : -1;
	free(body);
	int rc = -1;
	if (st == 201 || st == 200) {
		*result = strdup(r.len ? cm_buf_str(&r) : "{}");
		rc = *result ? 0 : cm_err_internal(err, "out of memory");
	} else if (st > 0) {
		char msg[400] = "";
		cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
		cm_err_set(err, st == 400 ? 400 : 500, st == 400 ? "validation_error" : "compose_error",
			   st == 400 ? "DOCKER_REJECTED" : "DOCKER_ERROR", "name", "Docker refused the volume: %s", msg);
	}
	cm_buf_free(&r);
	return rc;
}

static int job_volume_delete(struct ctx *c, yajl_val args, char **result, struct cm_error *err)
{
	const char *name = cm_json_get_str(args, "name");
	if (!name)
		return cm_err_internal(err, "volume.delete without a name");
	struct cm_buf p = {0}, r = {.limit = 1 << 20};
	cm_buf_puts(&p, "/volumes/");
	cm_buf_urlenc(&p, name);
	/* only this stack's volumes: another stack's data, or a volume made outside the service,
	 * is not found (and stays) */
	long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 30, err);
	if (st < 0) {
		cm_buf_free(&p);
		cm_buf_free(&r);
		return -1;
	}
	yajl_val insp = st == 200 ? cm_json_parse(cm_buf_str(&r), r.len, err) : NULL;
	bool ours = insp && cm_volume_is_ours(insp, c->rn->instance);
	if (insp)
		yajl_tree_free(insp);
	r.len = 0;
	if (st != 200 && st != 404) {
		cm_buf_free(&p);
		cm_buf_free(&r);
		return cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", "name", "volume inspect failed (%ld)", st);
	}
	if (!ours) {
		cm_buf_free(&p);
		cm_buf_free(&r);
		return cm_err_set(err, 404, "not_found", "VOLUME_NOT_FOUND", "name", "volume %s not found", name);
	}
	st = cm_docker_call(&c->docker, "DELETE", cm_buf_str(&p), NULL, &r, 60, err);
	cm_buf_free(&p);
	int rc = -1;
	char msg[400] = "";
	if (st > 0 && st != 204)
		cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
	if (st == 204) {
		*result = strdup("{}");
		rc = *result ? 0 : cm_err_internal(err, "out of memory");
	} else if (st == 404) {
		cm_err_set(err, 404, "not_found", "VOLUME_NOT_FOUND", "name", "volume %s not found", name);
	} else if (st == 409) {
		cm_err_set(err, 409, "conflict", "VOLUME_IN_USE", "name", "volume %s is in use: %s", name, msg);
	} else if (st > 0) {
		cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", "name", "Docker refused to remove %s: %s", name, msg);
	}
	cm_buf_free(&r);
	return rc;
}

int images_job(struct ctx *c, const char *kind, const char *key, yajl_val args, char **result, struct cm_error *err)
{
	(void)key;
	if (!strcmp(kind, "volume.create"))
		return job_volume_create(c, args, result, err);
	if (!strcmp(kind, "volume.delete"))
		return job_volume_delete(c, args, result, err);
	if (!strcmp(kind, "image.build"))
		return job_build(c, args, result, err);
	if (!strcmp(kind, "image.delete"))
		return job_image_delete(c, args, result, err);
	return cm_err_internal(err, "unknown job kind %s", kind);
}

void images_sweep(struct ctx *c)
{
	/* builds that were running when a runner stopped (their jobs run again) */
	struct cm_error e0;
	sqlite3_stmt *up = cm_db_stmt(&c->db, "UPDATE builds SET status = 'failed', error = 'interrupted: the runner stopped', "
					      "finished_at = ? WHERE status = 'running'", &e0);
	if (up) {
		sqlite3_bind_int64(up, 1, cm_now_ms());
		sqlite3_step(up);
		sqlite3_reset(up);
	}
	/* uploaded contexts whose job is gone (cancelled, or the machine went down mid-build) */
	char dir[PATH_MAX];
	if (cm_config_path(&c->rn->cfg, dir, sizeof dir, "builds") < 0)
		return;
	DIR *d = opendir(dir);
	if (!d)
		return;
	static const char *sql = "SELECT 1 FROM jobs WHERE kind IN ('image.build', 'app.create', 'app.update') "
				 "AND status IN ('queued', 'running') "
				 "AND json_extract(args, '$.context') = ?";
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char base[80];
		snprintf(base, sizeof base, "%.*s", (int)strcspn(de->d_name, "."), de->d_name);
		struct cm_error err;
		sqlite3_stmt *st = cm_db_stmt(&c->db, sql, &err);
		if (!st)
			break;
		sqlite3_bind_text(st, 1, base, -1, SQLITE_STATIC);
		bool live = sqlite3_step(st) == SQLITE_ROW;
		sqlite3_reset(st);
		if (!live)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}
