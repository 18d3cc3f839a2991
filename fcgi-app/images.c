/* images.c: /images and POST /containers/{cuid}/commit.
 *
 * Image reads (list, inspect) ask Docker directly: images are not mirrored in SQLite. Changes
 * (build, delete, commit) are jobs like every other change. A build's context streams into
 * DATA/builds/ and is checked (an archive, clean names, a Dockerfile) before its job is queued,
 * so a bad context leaves no job behind. */
#include "config.h"
#include "app.h"
#include "buildctx.h"
#include "multipart.h"
#include "spec.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_CHUNK 65536
#define BUILD_WAIT 600 /* a synchronous build waits JOB_TIMEOUT + this, then answers 202 */

static const char *path_ref(struct cm_req *r)
{
	const char *ref = r->params[0];
	if (!cm_valid_image_ref(ref, false)) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_IMAGE_REF", "ref",
				  "'%.80s' is not an image reference (name[:tag], name@sha256:..., or an image id)",
				  cm_valid_utf8(ref, strlen(ref)) ? ref : "?");
		return NULL;
	}
	return ref;
}


static void emit_tags(yajl_gen g, yajl_val tags)
{
	cm_jg_str(g, "tags");
	yajl_gen_array_open(g);
	for (size_t i = 0; YAJL_IS_ARRAY(tags) && i < tags->u.array.len; i++)
		if (YAJL_IS_STRING(tags->u.array.values[i]) && strcmp(tags->u.array.values[i]->u.string, "<none>:<none>"))
			cm_jg_str(g, tags->u.array.values[i]->u.string);
	yajl_gen_array_close(g);
}

void h_images_list(struct cm_req *r)
{
	yajl_val v;
	long st = cm_app_docker_get(r, "/images/json", &v);
	if (st < 0)
		return;
	if (st != 200) {
		cm_respond_errorf(r, 500, "compose_error", "DOCKER_ERROR", NULL, "Docker answered %ld to the image list", st);
		return;
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_str(g, "images");
	yajl_gen_array_open(g);
	for (size_t i = 0; YAJL_IS_ARRAY(v) && i < v->u.array.len; i++) {
		yajl_val im = v->u.array.values[i];
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "id", cm_json_get_str(im, "Id"));
		emit_tags(g, cm_json_get(im, "RepoTags"));
		long long n = 0;
		cm_json_get_int(im, "Size", &n);
		cm_jg_kv_int(g, "size", n);
		n = 0;
		cm_json_get_int(im, "Created", &n);
		cm_jg_kv_time(g, "created_at", n * 1000);
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
	yajl_gen_map_close(g);
	yajl_tree_free(v);
	cm_respond_gen(r, 200, g);
}

void h_image_get(struct cm_req *r)
{
	const char *ref = path_ref(r);
	if (!ref)
		return;
	struct cm_buf p = {0};
	cm_buf_puts(&p, "/images/");
	cm_buf_urlenc(&p, ref);
	cm_buf_puts(&p, "/json");
	yajl_val v;
	long st = cm_app_docker_get(r, cm_buf_str(&p), &v);
	cm_buf_free(&p);
	if (st < 0)
		return;
	if (st == 404) {
		cm_respond_errorf(r, 404, "not_found", "IMAGE_NOT_FOUND", "ref", "image %s not found", ref);
		return;
	}
	if (st != 200) {
		cm_respond_errorf(r, 500, "compose_error", "DOCKER_ERROR", "ref", "Docker answered %ld to the image inspect", st);
		return;
	}
	yajl_val cfg = cm_json_get(v, "Config");
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "id", cm_json_get_str(v, "Id"));
	emit_tags(g, cm_json_get(v, "RepoTags"));
	long long size = 0;
	cm_json_get_int(v, "Size", &size);
	cm_jg_kv_int(g, "size", size);
	cm_jg_kv_str(g, "created", cm_json_get_str(v, "Created"));
	cm_jg_kv_str(g, "architecture", cm_json_get_str(v, "Architecture"));
	cm_jg_kv_str(g, "os", cm_json_get_str(v, "Os"));
	static const char *const keys[][2] = {{"Cmd", "cmd"}, {"Entrypoint", "entrypoint"}, {"Env", "env"},
					      {"ExposedPorts", "exposed_ports"}, {"WorkingDir", "working_dir"},
					      {"User", "user"}, {"Labels", "labels"}};
	cm_jg_str(g, "config");
	yajl_gen_map_open(g);
	for (size_t i = 0; i < CM_ARRAY_LEN(keys); i++) {
		yajl_val x = cm_json_get(cfg, keys[i][0]);
		cm_jg_str(g, keys[i][1]);
		if (x)
			cm_jg_value(g, x);
		else
			cm_jg_null(g);
	}
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	yajl_tree_free(v);
	char *body = cm_jg_finish(g);
	cm_respond_json(r, 200, NULL, body ? body : "{}");
	free(body);
}

void h_image_delete(struct cm_req *r)
{
	const char *ref = path_ref(r);
	if (!ref)
		return;
	/* a managed container using it (any state): 409 with their ids, and nothing is queued */
	struct cm_error err = {0};
	struct cm_docker *d = cm_app_docker(r, &err);
	if (!d) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	struct cm_buf f = {0}, p = {0}, resp = {.limit = 8 << 20};
	cm_buf_puts(&f, "{\"ancestor\":[");
	yajl_gen g = cm_jg_new();
	cm_jg_str(g, ref);
	char *jref = cm_jg_finish(g);
	cm_buf_printf(&f, "%s],\"label\":[\"io.container-manager.cuid\"]}", jref ? jref : "\"\"");
	free(jref);
	cm_buf_puts(&p, "/containers/json?all=1&filters=");
	cm_buf_urlenc(&p, cm_buf_str(&f));
	long st = cm_docker_call(d, "GET", cm_buf_str(&p), NULL, &resp, 60, &err);
	cm_buf_free(&f);
	cm_buf_free(&p);
	if (st < 0) {
		cm_buf_free(&resp);
		cm_respond_error(r, &err, NULL);
		return;
	}
	yajl_val users = st == 200 ? cm_json_parse(cm_buf_str(&resp), resp.len, &err) : NULL;
	cm_buf_free(&resp);
	if (users && YAJL_IS_ARRAY(users) && users->u.array.len > 0) {
		struct cm_buf names = {0};
		for (size_t i = 0; i < users->u.array.len && i < 10; i++) {
			const char *c = cm_json_get_str(cm_json_get(users->u.array.values[i], "Labels"), "io.container-manager.cuid");
			cm_buf_printf(&names, "%s%s", i ? ", " : "", c ? c : "?");
		}
		cm_respond_errorf(r, 409, "conflict", "IMAGE_IN_USE", "ref", "image %s is used by managed container(s) %s", ref,
				  cm_buf_str(&names));
		cm_buf_free(&names);
		yajl_tree_free(users);
		return;
	}
	if (users)
		yajl_tree_free(users);
	struct cm_buf key = {0};
	g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "ref", ref);
	yajl_gen_map_close(g);
	char *a = cm_jg_finish(g);
	cm_buf_printf(&key, "image:%s", ref);
	char *result = NULL;
	int rc = a ? cm_run_job(r, "image.delete", cm_buf_str(&key), a, 60, NULL, NULL, &result) : -1;
	free(a);
	cm_buf_free(&key);
	free(result);
	if (rc > 0)
		cm_respond(r, 204, NULL, NULL, NULL, 0);
	else if (rc < 0 && !r->responded)
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
}

bool cm_context_type(const char *ct)
{
	static const char *const ok[] = {"application/zip", "application/x-zip-compressed", "application/x-tar",
					 "application/tar", "application/gzip", "application/x-gzip", "application/x-xz",
					 "application/x-bzip2", "application/octet-stream"};
	for (size_t i = 0; ct && i < CM_ARRAY_LEN(ok); i++) {
		size_t n = strlen(ok[i]);
		if (!strncasecmp(ct, ok[i], n) && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' '))
			return true;
	}
	return false;
}

/* The body into fd, bounded by UPLOAD_MAX_BYTES. */
static int spool(struct cm_req *r, int fd, struct cm_error *err)
{
	char *buf = malloc(IO_CHUNK);
	int64_t total = 0, max = r->app->cfg.upload_max_bytes;
	int rc = buf ? 0 : cm_err_internal(err, "out of memory");
	while (rc == 0) {
		int n = FCGX_GetStr(buf, IO_CHUNK, r->fr->in);
		if (n <= 0)
			break;
		total += n;
		if (total > max) {
			rc = cm_err_set(err, 413, "payload_too_large", "BODY_TOO_LARGE", "body",
					"the build context is larger than %lld bytes", (long long)max);
			break;
		}
		for (int off = 0; off < n && rc == 0;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				rc = cm_err_set(err, errno == ENOSPC ? 507 : 500, "io_error", errno == ENOSPC ? "DISK_FULL" : "IO_ERROR",
						NULL, "cannot store the build context: %s", strerror(errno));
			else
				off += (int)w;
		}
	}
	free(buf);
	if (rc == 0 && total == 0)
		rc = cm_err_validation(err, "EMPTY_BODY", "body", "send the build context (a zip or tar archive) as the body");
	return rc;
}

int cm_upload_stage(struct cm_req *r, char name[40], char *path, size_t pathsz, struct cm_error *err)
{
	const struct cm_config *cfg = &r->app->cfg;
	unsigned char rnd[18];
	path[0] = '\0';
	if (cm_random_bytes(rnd, sizeof rnd) < 0)
		return cm_err_internal(err, "no randomness");
	cm_b64url_encode(name, rnd, sizeof rnd);
	for (char *p = name; *p; p++)
		if (*p == '-' || *p == '_')
			*p = 'x'; /* a plain name: no leading dot or dash */
	/* DATA/builds is made by `serve` at start-up */
	if (cm_config_path(cfg, path, pathsz, "builds") < 0 || strlen(path) + strlen(name) + 2 > pathsz) {
		path[0] = '\0';
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot create the builds directory");
	}
	strcat(path, "/");
	strcat(path, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		path[0] = '\0';
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot store the build context: %s", strerror(errno));
	}
	int rc = spool(r, fd, err);
	if (close(fd) < 0 && rc == 0)
		rc = cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot store the build context: %s", strerror(errno));
	if (rc < 0) {
		unlink(path);
		path[0] = '\0';
	}
	return rc;
}

/* The build's parameters from the multipart form fields (tag, dockerfile, build_dir), each
 * either there or in the query, not both; another field is refused. */
static int build_fields(struct cm_req *r, const struct cm_mp_fields *fields, char *tag, size_t tagsz, char *df, size_t dfsz,
			char *bd, size_t bdsz, struct cm_error *err)
{
	for (size_t i = 0; i < fields->n; i++) {
		const struct cm_mp_field *f = &fields->f[i];
		char *out = !strcmp(f->name, "tag") ? tag : !strcmp(f->name, "dockerfile") ? df : !strcmp(f->name, "build_dir") ? bd : NULL;
		size_t outsz = out == tag ? tagsz : out == df ? dfsz : bdsz;
		char shown[64];
		cm_log_escape(shown, sizeof shown, f->name);
		if (!out)
			return cm_err_validation(err, "UNKNOWN_FIELD", shown,
						 "unknown form field \"%s\" (context, tag, dockerfile, build_dir)", shown);
		if (cm_req_query(r, f->name))
			return cm_err_validation(err, "DUPLICATE_FIELD", f->name,
						 "%s is given both as a query parameter and as a form field", f->name);
		if (f->len >= outsz)
			return cm_err_validation(err, out == tag ? "INVALID_IMAGE_REF" : "INVALID_VALUE", f->name, "%s is too long",
						 f->name);
		memcpy(out, f->value, f->len + 1);
	}
	return 0;
}

void h_image_build(struct cm_req *r)
{
	struct cm_error err = {0};
	const struct cm_config *cfg = &r->app->cfg;
	const char *qt = cm_req_query(r, "tag"), *qd = cm_req_query(r, "dockerfile"), *qb = cm_req_query(r, "build_dir");
	char ctx_path[PATH_MAX] = "", name[40], tag[512] = "";
	struct cm_buildctx b = {.max_unpacked = cfg->upload_max_unpacked, .max_entries = cfg->upload_max_entries};
	char boundary[80];
	bool multipart = cm_multipart_boundary(cm_req_header(r, "CONTENT_TYPE"), boundary, sizeof boundary);
	/* without a form, the parameters are all in the query: refused before the upload is read */
	if (!qt && !multipart) {
		cm_err_validation(&err, "MISSING_FIELD", "tag", "give the image a name: ?tag=name[:tag]");
		goto fail;
	}
	if ((qt && strlen(qt) >= sizeof tag) || (qt && !cm_valid_image_ref(qt, true))) {
		cm_err_validation(&err, "INVALID_IMAGE_REF", "tag", "'%.80s' is not an image name (lower-case name[:tag])",
				  cm_valid_utf8(qt, strlen(qt)) ? qt : "?");
		goto fail;
	}
	if ((qd && strlen(qd) >= sizeof b.dockerfile) || (qb && strlen(qb) >= sizeof b.build_dir)) {
		cm_err_validation(&err, "INVALID_VALUE", qd && strlen(qd) >= sizeof b.dockerfile ? "dockerfile" : "build_dir",
				  "too long");
		goto fail;
	}
	snprintf(tag, sizeof tag, "%s", qt ? qt : "");
	snprintf(b.dockerfile, sizeof b.dockerfile, "%s", qd ? qd : "");
	snprintf(b.build_dir, sizeof b.build_dir, "%s", qb ? qb : "");
	if (!multipart && !cm_context_type(cm_req_header(r, "CONTENT_TYPE"))) {
		cm_err_validation(&err, "INVALID_CONTENT_TYPE", "Content-Type",
				  "send the build context as application/zip or application/x-tar (optionally gzip), or as the "
				  "\"context\" file of multipart/form-data");
		goto fail;
	}
	const char *cl = cm_req_header(r, "CONTENT_LENGTH");
	if (cl && *cl && strtoll(cl, NULL, 10) > cfg->upload_max_bytes) {
		cm_err_set(&err, 413, "payload_too_large", "BODY_TOO_LARGE", "body", "the build context is larger than %lld bytes",
			   (long long)cfg->upload_max_bytes);
		goto fail;
	}
	if (cm_upload_stage(r, name, ctx_path, sizeof ctx_path, &err) < 0)
		goto fail;
	if (multipart) {
		struct cm_mp_fields fields;
		static const char *const form_fields[] = {"tag", "dockerfile", "build_dir", NULL};
		int mrc = cm_multipart_extract(ctx_path, boundary, "context", form_fields, &fields, &err);
		if (mrc == 1)
			mrc = cm_err_validation(&err, "INVALID_MULTIPART", "body",
						"the multipart body has no file part (send the archive as the \"context\" field)");
		if (mrc == 0)
			mrc = build_fields(r, &fields, tag, sizeof tag, b.dockerfile, sizeof b.dockerfile, b.build_dir,
					   sizeof b.build_dir, &err);
		cm_mp_fields_free(&fields);
		if (mrc < 0)
			goto fail_nodrain;
		if (!tag[0]) {
			cm_err_validation(&err, "MISSING_FIELD", "tag", "give the image a name: a tag form field or ?tag=name[:tag]");
			goto fail_nodrain;
		}
		if (!cm_valid_image_ref(tag, true)) {
			cm_err_validation(&err, "INVALID_IMAGE_REF", "tag", "'%.80s' is not an image name (lower-case name[:tag])",
					  cm_valid_utf8(tag, strlen(tag)) ? tag : "?");
			goto fail_nodrain;
		}
	}
	if (cm_buildctx_scan(ctx_path, &b, &err) < 0)
		goto fail_nodrain;
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "context", name);
	cm_jg_kv_str(g, "tag", tag);
	cm_jg_kv_str(g, "dockerfile", b.dockerfile);
	cm_jg_kv_str(g, "build_dir", b.build_dir);
	yajl_gen_map_close(g);
	char *args = cm_jg_finish(g);
	struct cm_buf key = {0};
	cm_buf_printf(&key, "image:%s", tag);
	char *result = NULL;
	int rc = args ? cm_run_job(r, "image.build", cm_buf_str(&key), args, BUILD_WAIT, NULL, NULL, &result) : -1;
	free(args);
	cm_buf_free(&key);
	if (rc > 0) {
		cm_respond_json(r, 201, NULL, result ? result : "{}");
	} else if (rc < 0) {
		if (!r->responded)
			cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		/* the job never got queued (or failed): the runner removes the context when it ran;
		 * when it was not queued at all it is ours to remove */
		if (!r->job_id)
			unlink(ctx_path);
	}
	free(result);
	return;
fail:
	cm_req_drain(r);
fail_nodrain:
	if (ctx_path[0])
		unlink(ctx_path);
	cm_respond_error(r, &err, NULL);
}

void h_container_commit(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid)
		return;
	struct cm_error err = {0};
	yajl_val v = cm_req_json(r, false, &err);
	if (!v) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	const char *repo = NULL, *tag = NULL, *comment = NULL;
	for (size_t i = 0; YAJL_IS_OBJECT(v) && i < v->u.object.len; i++) {
		const char *k = v->u.object.keys[i];
		yajl_val x = v->u.object.values[i];
		const char **slot = !strcmp(k, "repository") ? &repo : !strcmp(k, "tag") ? &tag : !strcmp(k, "comment") ? &comment : NULL;
		if (!slot) {
			cm_err_validation(&err, "UNKNOWN_FIELD", k, "unknown field \"%.64s\" (repository, tag, comment)", k);
			goto fail;
		}
		if (!YAJL_IS_STRING(x)) {
			cm_err_validation(&err, "INVALID_TYPE", k, "%s must be a string", k);
			goto fail;
		}
		*slot = YAJL_GET_STRING(x);
	}
	if (!YAJL_IS_OBJECT(v)) {
		cm_err_validation(&err, "INVALID_TYPE", NULL, "the body must be an object {repository, tag}");
		goto fail;
	}
	if (!repo || !*repo) {
		cm_err_validation(&err, "MISSING_FIELD", "repository", "repository is required");
		goto fail;
	}
	if (strchr(repo, ':') && !strchr(repo, '/')) {
		cm_err_validation(&err, "INVALID_IMAGE_REF", "repository", "give the tag in \"tag\", not in repository");
		goto fail;
	}
	char full[400];
	snprintf(full, sizeof full, "%s:%s", repo, tag ? tag : "latest");
	if (strlen(repo) > 255 || (tag && strlen(tag) > 128) || !cm_valid_image_ref(full, true)) {
		cm_err_validation(&err, "INVALID_IMAGE_REF", tag && !cm_valid_image_ref(repo, true) ? "repository" : (tag ? "tag" : "repository"),
				  "'%.80s' is not a valid image name", cm_valid_utf8(full, strlen(full)) ? full : "?");
		goto fail;
	}
	if (comment && strlen(comment) > 1024) {
		cm_err_validation(&err, "INVALID_VALUE", "comment", "comment is longer than 1024 bytes");
		goto fail;
	}
	if (!cm_container_exists(r, cuid) || cm_dry_run(r)) {
		yajl_tree_free(v);
		return;
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "repository", repo);
	cm_jg_kv_str(g, "tag", tag ? tag : "latest");
	if (comment)
		cm_jg_kv_str(g, "comment", comment);
	yajl_gen_map_close(g);
	yajl_tree_free(v);
	char *args = cm_jg_finish(g);
	char *result = NULL;
	int rc = args ? cm_run_job(r, "commit", cuid, args, 600, NULL, NULL, &result) : -1;
	free(args);
	if (rc > 0)
		cm_respond_json(r, 201, NULL, result ? result : "{}");
	else if (rc < 0 && !r->responded)
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
	free(result);
	return;
fail:
	yajl_tree_free(v);
	cm_respond_error(r, &err, NULL);
}

/* A follower holds a worker for as long as it reads: it takes a slot of the followers' pool
 * (WORKERS_MAX/4 of them) and one of the busy pool (app.h), so the other workers stay free for
 * the rest of the API. Fills slots[2]; returns -1 when it answered 503. */
static int follow_slots(struct cm_req *r, int slots[2])
{
	slots[0] = cm_hold_slot(r->app, CM_HOLD_FOLLOW);
	slots[1] = slots[0] >= 0 ? cm_hold_slot(r->app, CM_HOLD_BUSY) : -1;
	if (slots[1] >= 0)
		return 0;
	if (slots[0] >= 0)
		close(slots[0]);
	slots[0] = -1;
	cm_respond_pool_full(r, CM_HOLD_FOLLOW, "TOO_MANY_FOLLOWERS", "follow", "retry, or read the log without follow");
	return -1;
}

/* GET /jobs/{id}/log: a build job's output so far (text); ?follow=1 streams it until the job ends. */
static void job_log(struct cm_req *r, int64_t id, bool follow);

void h_job_log(struct cm_req *r)
{
	int64_t id = cm_path_job_id(r);
	if (id < 0)
		return;
	r->job_id = id;
	const char *fv = cm_req_query(r, "follow");
	bool follow = fv && (!strcmp(fv, "1") || !strcmp(fv, "true"));
	if (fv && !follow && strcmp(fv, "0") && strcmp(fv, "false")) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "follow", "follow must be true or false");
		return;
	}
	int slots[2] = {-1, -1};
	if (follow && follow_slots(r, slots) < 0)
		return;
	job_log(r, id, follow);
	for (int i = 0; i < 2; i++)
		if (slots[i] >= 0)
			close(slots[i]);
}

/* Sends what the build's spool file holds past the read position; -1 when the client went away. */
static int spool_drain(struct cm_req *r, int fd)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0; /* the end so far (a read error ends the spool like an end of file) */
		if (FCGX_PutStr(buf, (int)n, r->fr->out) < 0)
			return -1;
	}
}

/* Opens DATA/builds/log.BID, the runner's spool of a running build's whole output, or -1. */
static int spool_open(struct cm_req *r, int64_t bid)
{
	char dir[PATH_MAX], p[PATH_MAX];
	if (cm_config_path(&r->app->cfg, dir, sizeof dir, "builds") < 0 ||
	    cm_pathf(p, sizeof p, "%s/log.%lld", dir, (long long)bid) < 0)
		return -1;
	return open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

/* Without follow: the kept tail (1 MiB) of the latest build's log. With follow: a running build
 * is read from its spool file from the first byte (every byte, however fast the build prints;
 * the tail in the row could move past what was sent between two looks); a build that has ended
 * (or whose spool cannot be opened) from the row's tail. Ends when the job ends. */
static void job_log(struct cm_req *r, int64_t id, bool follow)
{
	static const char *q = "SELECT j.status, b.log, b.id, b.status FROM jobs j LEFT JOIN builds b ON b.job_id = j.id "
			       "WHERE j.id = ? ORDER BY b.id DESC LIMIT 1";
	struct cm_db *db = &r->app->db;
	struct cm_error err = {0};
	size_t sent = 0;        /* bytes of the row's log sent (build sent_bid) */
	int64_t sent_bid = 0;
	int64_t spool_bid = 0;  /* the build whose spool was opened (or tried long enough) */
	int spool = -1;
	int spool_waits = 0;
	bool started = false;
	int64_t deadline = cm_monotonic_ms() + 3600 * 1000LL;
	for (;;) {
		sqlite3_stmt *st = cm_db_stmt(db, q, &err);
		if (!st) {
			if (!started)
				cm_respond_error(r, &err, NULL);
			break;
		}
		sqlite3_bind_int64(st, 1, id);
		int rc = sqlite3_step(st);
		if (rc != SQLITE_ROW) {
			sqlite3_reset(st);
			if (!started) {
				if (rc == SQLITE_DONE)
					cm_respond_errorf(r, 404, "not_found", "JOB_NOT_FOUND", "id", "job %lld not found", (long long)id);
				else
					cm_respond_error(r, (cm_db_fail(db, &err, "read job"), &err), NULL);
			}
			break;
		}
		bool ended = strcmp(cm_col_str(st, 0), "queued") && strcmp(cm_col_str(st, 0), "running");
		const char *log = cm_col_str(st, 1);
		size_t len = log ? (size_t)sqlite3_column_bytes(st, 1) : 0;
		int64_t bid = sqlite3_column_type(st, 2) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 2);
		bool building = cm_col_str(st, 3) && !strcmp(cm_col_str(st, 3), "running");
		if (bid != sent_bid) {
			sent = 0; /* a new build of the job: its own log */
			sent_bid = bid;
		}
		bool from_spool = false;
		if (follow && bid > 0 && bid != spool_bid && building && sent == 0) {
			spool = spool_open(r, bid);
			/* the runner makes the file right after the row: wait a little for it */
			if (spool >= 0 || ++spool_waits > 10)
				spool_bid = bid;
			else
				from_spool = true; /* send nothing of this build from the row yet */
		}
		if (spool >= 0) {
			from_spool = true;
			if (!building || ended || bid != spool_bid)
				sent = bid == spool_bid ? len : 0; /* the row's log is final: the spool held it all */
		}
		char *chunk = NULL;
		size_t clen = 0;
		if (!from_spool && len > sent) {
			clen = len - sent;
			chunk = malloc(clen);
			if (chunk)
				memcpy(chunk, log + sent, clen);
		} else if (!from_spool && len < sent) {
			sent = len; /* the kept tail moved on */
		}
		sqlite3_reset(st);
		if (!follow) {
			cm_respond(r, 200, "text/plain; charset=utf-8", NULL, chunk ? chunk : "", chunk ? clen : 0);
			free(chunk);
			return;
		}
		if (!started) {
			cm_respond_start(r, 200, "text/plain; charset=utf-8", "X-Accel-Buffering: no\r\n", -1);
			started = true;
		}
		if (spool >= 0) {
			/* every byte reaches the spool before the row says the build ended: after seeing the
			 * end, one more read to the end of the file has them all */
			bool done = !building || ended || bid != spool_bid;
			if (spool_drain(r, spool) < 0 || FCGX_FFlush(r->fr->out) < 0)
				break; /* the client went away */
			if (done) {
				close(spool);
				spool = -1;
				continue; /* look again at once: a job's next build, or its end */
			}
		}
		if (chunk) {
			if (FCGX_PutStr(chunk, (int)clen, r->fr->out) < 0 || FCGX_FFlush(r->fr->out) < 0) {
				free(chunk);
				break; /* the client went away */
			}
			sent += clen;
			free(chunk);
		}
		if ((ended && spool < 0) || cm_monotonic_ms() > deadline)
			break;
		/* no transaction is held between looks */
		usleep(300 * 1000);
	}
	if (spool >= 0)
		close(spool);
}
