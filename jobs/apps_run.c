/* apps_run.c: app.run — a command (an argv, never a shell string) in a service app's running
 * container (an exec), or in a one-off container of a command app's image; stdout and stderr
 * demultiplexed and kept up to OUT_MAX bytes each. */
#include "config.h"
#include "apps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Docker's multiplexed stream (8-byte frame headers) into bounded stdout/stderr buffers. */
struct demux {
	unsigned char hdr[8];
	size_t hlen;
	size_t left;   /* payload bytes left in the current frame */
	int stream;    /* 1 stdout, 2 stderr */
	struct cm_buf out, err;
	bool out_cut, err_cut;
};

static int demux_chunk(const char *data, size_t len, void *ud)
{
	struct demux *d = ud;
	while (len) {
		if (!d->left) {
			size_t n = 8 - d->hlen < len ? 8 - d->hlen : len;
			memcpy(d->hdr + d->hlen, data, n);
			d->hlen += n;
			data += n;
			len -= n;
			if (d->hlen == 8) {
				d->stream = d->hdr[0];
				d->left = ((size_t)d->hdr[4] << 24) | ((size_t)d->hdr[5] << 16) | ((size_t)d->hdr[6] << 8) | d->hdr[7];
				d->hlen = 0;
			}
			continue;
		}
		size_t n = d->left < len ? d->left : len;
		struct cm_buf *b = d->stream == 2 ? &d->err : &d->out;
		bool *cut = d->stream == 2 ? &d->err_cut : &d->out_cut;
		size_t room = b->len < OUT_MAX ? OUT_MAX - b->len : 0;
		if (n > room)
			*cut = true;
		if (room && cm_buf_append(b, data, n < room ? n : room) < 0)
			return 1;
		d->left -= n;
		data += n;
		len -= n;
	}
	return 0;
}

/* s with invalid UTF-8 bytes replaced (JSON strings must be text); caller frees. */
static char *utf8_clean(const char *s, size_t n)
{
	char *o = malloc(n * 3 + 1);
	if (!o)
		return NULL;
	size_t j = 0;
	for (size_t i = 0; i < n;) {
		unsigned char ch = (unsigned char)s[i];
		size_t len = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 0;
		if (ch == 0 || (len && i + len <= n && cm_valid_utf8(s + i, len))) {
			if (ch == 0) {
				o[j++] = ' ';
				i++;
				continue;
			}
			memcpy(o + j, s + i, len);
			j += len;
			i += len;
		} else {
			memcpy(o + j, "\xef\xbf\xbd", 3);
			j += 3;
			i++;
		}
	}
	o[j] = '\0';
	return o;
}

static int wait_cb(const char *data, size_t len, void *ud)
{
	return cm_buf_append(ud, data, len) < 0;
}

/* A command app: a one-off container of the app's image running argv (removed afterwards). */
static int run_oneoff(struct ctx *c, const struct app *a, yajl_val argv, struct demux *d, long long *code,
		      struct cm_error *err)
{
	char uid[64];
	if (app_user(c, a->user, uid, err) < 0)
		return -1;
	char *body = app_body(c, a->name, a->image, 0, argv, uid);
	if (!body)
		return cm_err_internal(err, "out of memory");
	char id[80] = "";
	int rc = app_container_create(c, NULL, body, id, err);
	free(body);
	if (rc < 0)
		return -1;
	char path[200];
	struct cm_buf w = {.limit = 1 << 16};
	if (app_container_start(c, id, err) < 0) {
		/* a missing program fails the start: that is the command failing */
		snprintf(path, sizeof path, "%s\n", err->message);
		cm_buf_puts(&d->err, path);
		*code = 127;
		app_rm_container(c, id);
		return 0;
	}
	snprintf(path, sizeof path, "/containers/%s/wait", id);
	long st = cm_docker_post_stream(&c->docker, path, NULL, wait_cb, &w, RUN_TIMEOUT, err);
	rc = -1;
	if (st == 200) {
		yajl_val v = cm_json_parse(cm_buf_str(&w), w.len, err);
		if (v && cm_json_get_int(v, "StatusCode", code))
			rc = 0;
		else if (v)
			cm_err_internal(err, "the command's exit code is unknown");
		if (v)
			yajl_tree_free(v);
	} else if (st > 0) {
		cm_err_internal(err, "container wait failed (%ld)", st);
	}
	cm_buf_free(&w);
	if (rc == 0) {
		snprintf(path, sizeof path, "/containers/%s/logs?stdout=1&stderr=1", id);
		st = cm_docker_stream(&c->docker, path, demux_chunk, d, NULL, err);
		if (st != 200)
			rc = st < 0 ? -1 : cm_err_internal(err, "reading the command's output failed (%ld)", st);
	}
	app_rm_container(c, id);
	return rc;
}

int app_job_run(struct ctx *c, const char *name, yajl_val args, char **result, struct cm_error *err)
{
	struct app a;
	if (app_load(c, name, &a, err) < 0)
		return -1;
	yajl_val argv = cm_json_get(args, "argv");
	if (!YAJL_IS_ARRAY(argv) || !argv->u.array.len)
		return cm_err_internal(err, "app.run without argv");
	bool json = YAJL_IS_TRUE(cm_json_get(args, "json"));
	struct demux d = {0};
	long long code = -1;
	int rc;
	if (!strcmp(a.lifetime, "service")) {
		if (!a.docker_id[0])
			return cm_err_set(err, 409, "conflict", "APP_NOT_RUNNING", "name", "the app has no container");
		rc = docker_exec_argv(c, a.docker_id, argv, demux_chunk, &d, RUN_TIMEOUT, &code, err);
		if (rc < 0 && !strcmp(err->code, "CONTAINER_NOT_RUNNING"))
			cm_err_set(err, 409, "conflict", "APP_NOT_RUNNING", "name", "the app's container is not running");
	} else {
		rc = run_oneoff(c, &a, argv, &d, &code, err);
	}
	if (rc < 0)
		goto out;
	char *so = utf8_clean(cm_buf_str(&d.out), d.out.len), *se = utf8_clean(cm_buf_str(&d.err), d.err.len);
	yajl_val parsed = NULL;
	struct cm_error perr = {0};
	if (json && code == 0 && so) {
		parsed = cm_json_parse(so, strlen(so), &perr);
		if (!parsed) {
			rc = cm_err_set(err, 422, "command_error", "OUTPUT_NOT_JSON", "json",
					"the command succeeded but its stdout is not JSON (%s): %.200s", perr.message, so);
			free(so);
			free(se);
			goto out;
		}
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "stdout", so ? so : "");
	cm_jg_kv_str(g, "stderr", se ? se : "");
	cm_jg_kv_int(g, "exit_code", code);
	cm_jg_str(g, "stdout_truncated");
	cm_jg_bool(g, d.out_cut);
	cm_jg_str(g, "stderr_truncated");
	cm_jg_bool(g, d.err_cut);
	if (json) {
		cm_jg_str(g, "value");
		if (parsed)
			cm_jg_value(g, parsed);
		else
			cm_jg_null(g);
	}
	yajl_gen_map_close(g);
	if (parsed)
		yajl_tree_free(parsed);
	free(so);
	free(se);
	*result = cm_jg_finish(g);
	rc = *result ? 0 : cm_err_internal(err, "out of memory");
out:
	cm_buf_free(&d.out);
	cm_buf_free(&d.err);
	return rc;
}
