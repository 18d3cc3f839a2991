/* apps.c: the runner's side of /apps.
 *
 *   app.create  {name, src, port, resolved_port, scheme, health, lifetime, build_dir,
 *                context|image, dockerfile}      build (or take the image), start, insert the row
 *   app.update  (the same)                        build the next generation, start it, wait until
 *                                                 healthy, swap the row, drain, remove the old one
 *   app.delete  {name}                            route, container and image go
 *   app.restart {name}                            (queued by the health checker) start it again
 *   app.run     {name, argv, json}                a command in the app's container (key "apprun:NAME",
 *                                                 apps_run.c)
 *
 * Keys are "app:NAME", so one app's changes run in order. Images are tagged cm-app-NAME:GEN-INST
 * and containers named cm-app-NAME-GEN-INST (INST: the first 8 characters of the instance id,
 * since stacks may share a dockerd); both carry the instance and app labels. The health checker
 * (apps_health.c) records each service app's state in its row, which the route's gate reads per
 * request. */
#include "config.h"
#include "apps.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int app_load(struct ctx *c, const char *name, struct app *a, struct cm_error *err)
{
	static const char *sql = "SELECT image, docker_id, lifetime, scheme, health, status, generation, host_port, "
				 "container_port, built, COALESCE(last_job, 0), user FROM apps WHERE name = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memset(a, 0, sizeof *a);
		snprintf(a->name, sizeof a->name, "%s", name);
		snprintf(a->image, sizeof a->image, "%s", cm_col_str(st, 0) ? cm_col_str(st, 0) : "");
		snprintf(a->docker_id, sizeof a->docker_id, "%s", cm_col_str(st, 1) ? cm_col_str(st, 1) : "");
		snprintf(a->lifetime, sizeof a->lifetime, "%s", cm_col_str(st, 2) ? cm_col_str(st, 2) : "");
		snprintf(a->scheme, sizeof a->scheme, "%s", cm_col_str(st, 3) ? cm_col_str(st, 3) : "http");
		snprintf(a->health, sizeof a->health, "%s", cm_col_str(st, 4) ? cm_col_str(st, 4) : "/");
		snprintf(a->status, sizeof a->status, "%s", cm_col_str(st, 5) ? cm_col_str(st, 5) : "");
		a->generation = sqlite3_column_int64(st, 6);
		a->host_port = sqlite3_column_int64(st, 7);
		a->container_port = sqlite3_column_int64(st, 8);
		a->built = sqlite3_column_int(st, 9) != 0;
		a->last_job = sqlite3_column_int64(st, 10);
		snprintf(a->user, sizeof a->user, "%s", cm_col_str(st, 11) ? cm_col_str(st, 11) : "");
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return cm_err_set(err, 404, "not_found", "APP_NOT_FOUND", "name", "app %s not found", name);
	return rc == SQLITE_ROW ? 0 : cm_db_fail(&c->db, err, "read app");
}

/* Runs one write statement with text/int parameters: "t" text, "i" int64, "n" null. */
int app_exec(struct ctx *c, const char *sql, const char *types, ...)
{
	struct cm_error err;
	size_t marks = 0;
	for (const char *q = sql; *q; q++)
		marks += *q == '?';
	if (marks != strlen(types)) {
		cm_error("apps: %zu parameters for %zu placeholders in \"%.60s\"", strlen(types), marks, sql);
		return -1;
	}
	for (int attempt = 0; attempt < 50; attempt++) {
		sqlite3_stmt *st = cm_db_stmt(&c->db, sql, &err);
		if (!st)
			return -1;
		va_list ap;
		va_start(ap, types);
		for (int i = 0; types[i]; i++) {
			if (types[i] == 't') {
				const char *v = va_arg(ap, const char *);
				if (v)
					sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT);
			} else if (types[i] == 'i') {
				sqlite3_bind_int64(st, i + 1, va_arg(ap, long long));
			}
		}
		va_end(ap);
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		if (rc == SQLITE_DONE)
			return 0;
		if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
			break;
		usleep(50000);
	}
	cm_warn("apps: a write failed: %s", sqlite3_errmsg(c->db.h));
	return -1;
}

void app_rm_container(struct ctx *c, const char *id_or_name)
{
	if (!id_or_name || !*id_or_name)
		return;
	struct cm_buf p = {0}, r = {0};
	struct cm_error e;
	cm_buf_puts(&p, "/containers/");
	cm_buf_urlenc(&p, id_or_name);
	cm_buf_puts(&p, "?force=1&v=1");
	long st = cm_docker_call(&c->docker, "DELETE", cm_buf_str(&p), NULL, &r, 60, &e);
	if (st != 204 && st != 404)
		cm_warn("apps: removing container %s: %ld", id_or_name, st);
	cm_buf_free(&p);
	cm_buf_free(&r);
}

void app_rm_image(struct ctx *c, const char *ref)
{
	if (!ref || !*ref)
		return;
	struct cm_buf p = {0}, r = {0};
	struct cm_error e;
	cm_buf_puts(&p, "/images/");
	cm_buf_urlenc(&p, ref);
	cm_buf_puts(&p, "?force=1");
	long st = cm_docker_call(&c->docker, "DELETE", cm_buf_str(&p), NULL, &r, 120, &e);
	if (st != 200 && st != 404)
		cm_warn("apps: removing image %s: %ld", ref, st);
	cm_buf_free(&p);
	cm_buf_free(&r);
}

/* Removes this stack's containers of app name other than keep_id, and the images built for it
 * other than keep_tag (NULL: all of them): what an interrupted job may have left behind. */
void app_sweep(struct ctx *c, const char *name, const char *keep_id, const char *keep_tag)
{
	struct cm_buf f = {0}, p = {0}, r = {0};
	struct cm_error e;
	cm_buf_printf(&f, "{\"label\":[\"%s=%s\",\"%s=%s\"]}", APP_LABEL, name, INSTANCE_LABEL, c->rn->instance);
	cm_buf_puts(&p, "/containers/json?all=1&filters=");
	cm_buf_urlenc(&p, cm_buf_str(&f));
	long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 60, &e);
	yajl_val v = st == 200 ? cm_json_parse(cm_buf_str(&r), r.len, &e) : NULL;
	for (size_t i = 0; YAJL_IS_ARRAY(v) && i < v->u.array.len; i++) {
		const char *id = cm_json_get_str(v->u.array.values[i], "Id");
		if (id && (!keep_id || strcmp(id, keep_id)))
			app_rm_container(c, id);
	}
	if (v)
		yajl_tree_free(v);
	f.len = p.len = r.len = 0;
	char suffix[16];
	snprintf(suffix, sizeof suffix, "-%.8s", c->rn->instance);
	cm_buf_printf(&f, "{\"reference\":[\"cm-app-%s\"]}", name);
	cm_buf_puts(&p, "/images/json?filters=");
	cm_buf_urlenc(&p, cm_buf_str(&f));
	st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 60, &e);
	v = st == 200 ? cm_json_parse(cm_buf_str(&r), r.len, &e) : NULL;
	for (size_t i = 0; YAJL_IS_ARRAY(v) && i < v->u.array.len; i++) {
		yajl_val tags = cm_json_get(v->u.array.values[i], "RepoTags");
		for (size_t j = 0; YAJL_IS_ARRAY(tags) && j < tags->u.array.len; j++) {
			const char *t = YAJL_GET_STRING(tags->u.array.values[j]);
			size_t tl = t ? strlen(t) : 0, sl = strlen(suffix);
			/* only this stack's tags of this app: cm-app-NAME:GEN-INST */
			if (!t || tl <= sl || strcmp(t + tl - sl, suffix) || (keep_tag && !strcmp(t, keep_tag)))
				continue;
			char prefix[96];
			snprintf(prefix, sizeof prefix, "cm-app-%s:", name);
			if (!strncmp(t, prefix, strlen(prefix)))
				app_rm_image(c, t);
		}
	}
	if (v)
		yajl_tree_free(v);
	cm_buf_free(&f);
	cm_buf_free(&p);
	cm_buf_free(&r);
}

/* The image's id and lowest exposed tcp port (0: none). */
static int image_info(struct ctx *c, const char *ref, char id[80], long long *port, struct cm_error *err)
{
	struct cm_buf p = {0}, r = {0};
	cm_buf_puts(&p, "/images/");
	cm_buf_urlenc(&p, ref);
	cm_buf_puts(&p, "/json");
	long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 60, err);
	cm_buf_free(&p);
	if (st != 200) {
		cm_buf_free(&r);
		if (st == 404)
			return cm_err_set(err, 404, "not_found", "IMAGE_NOT_FOUND", "src", "image %s is not available locally", ref);
		return st < 0 ? -1 : cm_err_internal(err, "image inspect failed (%ld)", st);
	}
	yajl_val v = cm_json_parse(cm_buf_str(&r), r.len, err);
	cm_buf_free(&r);
	if (!v)
		return -1;
	snprintf(id, 80, "%s", cm_json_get_str(v, "Id") ? cm_json_get_str(v, "Id") : "");
	yajl_val ep = cm_json_get(cm_json_get(v, "Config"), "ExposedPorts");
	*port = 0;
	for (size_t i = 0; YAJL_IS_OBJECT(ep) && i < ep->u.object.len; i++) {
		char *end;
		long long p2 = strtoll(ep->u.object.keys[i], &end, 10);
		if (p2 > 0 && p2 < 65536 && !strcmp(end, "/tcp") && (!*port || p2 < *port))
			*port = p2;
	}
	yajl_tree_free(v);
	return 0;
}

/* The create body of an app container: confined like every container the service makes, the
 * app's port published on 127.0.0.1 with an ephemeral host port. argv/entrypoint (a run of a
 * command app) replace the image's command when given. */
int app_user(struct ctx *c, const char *asked, char out[64], struct cm_error *err)
{
	return cm_config_container_user(&c->rn->cfg, asked, out, "user", err);
}

char *app_body(struct ctx *c, const char *name, const char *image, long long port, yajl_val argv, const char *user)
{
	const struct cm_config *cfg = &c->rn->cfg;
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	char buf[64];
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "Image", image);
	/* never the image's own USER (often root): the app's uid, APP_USER_UID by default */
	cm_jg_kv_str(g, "User", user);
	if (argv) {
		cm_jg_str(g, "Entrypoint");
		yajl_gen_array_open(g);
		cm_jg_str(g, YAJL_GET_STRING(argv->u.array.values[0]));
		yajl_gen_array_close(g);
		cm_jg_str(g, "Cmd");
		yajl_gen_array_open(g);
		for (size_t i = 1; i < argv->u.array.len; i++)
			cm_jg_str(g, YAJL_GET_STRING(argv->u.array.values[i]));
		yajl_gen_array_close(g);
	}
	cm_jg_str(g, "Labels");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, INSTANCE_LABEL, c->rn->instance);
	cm_jg_kv_str(g, APP_LABEL, name);
	yajl_gen_map_close(g);
	snprintf(buf, sizeof buf, "%lld/tcp", port);
	if (port > 0) {
		cm_jg_str(g, "ExposedPorts");
		yajl_gen_map_open(g);
		cm_jg_str(g, buf);
		yajl_gen_map_open(g);
		yajl_gen_map_close(g);
		yajl_gen_map_close(g);
	}
	cm_jg_str(g, "HostConfig");
	yajl_gen_map_open(g);
	emit_confinement(g, cfg->default_memory, cfg->default_pids, cfg->default_cpus);
	if (port > 0) {
		cm_jg_str(g, "PortBindings");
		yajl_gen_map_open(g);
		cm_jg_str(g, buf);
		yajl_gen_array_open(g);
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "HostIp", "127.0.0.1");
		cm_jg_kv_str(g, "HostPort", "");
		yajl_gen_map_close(g);
		yajl_gen_array_close(g);
		yajl_gen_map_close(g);
	}
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	return cm_jg_finish(g);
}

/* Creates a container (name may be NULL) and returns its id in id. */
int app_container_create(struct ctx *c, const char *cname, const char *body, char id[80], struct cm_error *err)
{
	struct cm_buf p = {0}, r = {0};
	cm_buf_puts(&p, "/containers/create");
	if (cname) {
		cm_buf_puts(&p, "?name=");
		cm_buf_urlenc(&p, cname);
	}
	long st = cm_docker_call(&c->docker, "POST", cm_buf_str(&p), body, &r, 60, err);
	cm_buf_free(&p);
	int rc = 0;
	if (st == 201) {
		yajl_val v = cm_json_parse(cm_buf_str(&r), r.len, err);
		const char *i = v ? cm_json_get_str(v, "Id") : NULL;
		snprintf(id, 80, "%s", i ? i : "");
		if (v)
			yajl_tree_free(v);
		if (!id[0])
			rc = cm_err_internal(err, "Docker create answered without an id");
	} else if (st > 0) {
		char msg[400];
		cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
		rc = cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", NULL, "creating the app's container failed (%ld): %s", st,
				msg);
	} else {
		rc = -1;
	}
	cm_buf_free(&r);
	return rc;
}

int app_container_start(struct ctx *c, const char *id, struct cm_error *err)
{
	char path[200];
	snprintf(path, sizeof path, "/containers/%s/start", id);
	struct cm_buf r = {0};
	long st = cm_docker_call(&c->docker, "POST", path, NULL, &r, 60, err);
	int rc = 0;
	if (st > 0 && st != 204 && st != 304) {
		char msg[400];
		cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
		rc = cm_err_set(err, 500, "compose_error", "START_FAILED", NULL, "the app's container did not start: %s", msg);
	} else if (st < 0) {
		rc = -1;
	}
	cm_buf_free(&r);
	return rc;
}

/* Running state and where port/tcp answers (host_port 0 when not published). 404 → -1 with 404 err. */
int app_container_state(struct ctx *c, const char *id, long long port, bool *running, struct where *w,
			   struct cm_error *err)
{
	yajl_val v;
	long st = docker_inspect(c, id, &v, err);
	if (st == 404)
		return cm_err_set(err, 404, "not_found", "CONTAINER_GONE", NULL, "the app's container is gone");
	if (st != 200)
		return -1;
	*running = YAJL_IS_TRUE(cm_json_get(cm_json_get(v, "State"), "Running"));
	memset(w, 0, sizeof *w);
	char key[32];
	snprintf(key, sizeof key, "%lld/tcp", port);
	yajl_val ns = cm_json_get(v, "NetworkSettings");
	yajl_val b = cm_json_get(cm_json_get(ns, "Ports"), key);
	for (size_t i = 0; YAJL_IS_ARRAY(b) && i < b->u.array.len && !w->host_port; i++) {
		const char *hp = cm_json_get_str(b->u.array.values[i], "HostPort");
		if (hp)
			w->host_port = atoll(hp);
	}
	const char *ip = cm_json_get_str(ns, "IPAddress");
	yajl_val nets = cm_json_get(ns, "Networks");
	for (size_t i = 0; (!ip || !*ip) && YAJL_IS_OBJECT(nets) && i < nets->u.object.len; i++)
		ip = cm_json_get_str(nets->u.object.values[i], "IPAddress");
	/* an IPv4 address only (it goes into a URL and nginx's upstream as it is) */
	if (ip && *ip && strlen(ip) < sizeof w->ip && strspn(ip, "0123456789.") == strlen(ip))
		snprintf(w->ip, sizeof w->ip, "%s", ip);
	yajl_tree_free(v);
	return 0;
}

/* Creates and starts generation gen's container; id and w filled. Nothing is left on error. */
int app_service_up(struct ctx *c, const char *name, long long gen, const char *image, long long port, const char *user,
		   char id[80], struct where *w, struct cm_error *err)
{
	char uid[64];
	if (app_user(c, user, uid, err) < 0)
		return -1;
	char cname[128];
	/* several stacks may share a dockerd: the instance is part of the name */
	if (cm_pathf(cname, sizeof cname, "cm-app-%s-%lld-%.8s", name, gen, c->rn->instance) < 0)
		return cm_err_internal(err, "container name too long");
	app_rm_container(c, cname); /* a half-made one from an interrupted run of this job */
	char *body = app_body(c, name, image, port, NULL, uid);
	if (!body)
		return cm_err_internal(err, "out of memory");
	int rc = app_container_create(c, cname, body, id, err);
	free(body);
	if (rc < 0)
		return -1;
	bool running = false;
	if (app_container_start(c, id, err) < 0 || app_container_state(c, id, port, &running, w, err) < 0) {
		app_rm_container(c, id);
		return -1;
	}
	if (!w->host_port) {
		app_rm_container(c, id);
		if (!running)
			return cm_err_set(err, 422, "unhealthy", "APP_UNHEALTHY", "health", "the app's container exited at once");
		return cm_err_set(err, 500, "compose_error", "START_FAILED", "port",
				  "the app's container has no host port for %lld/tcp", port);
	}
	return 0;
}

/* ---- health probes ---- */

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
	(void)p, (void)ud;
	return s * n;
}

/* GET scheme://IP:port{health} (or 127.0.0.1:host_port without a bridge address): 0 when it
 * answers 2xx/3xx, else -1 with why in msg. */
int app_probe(CURL *h, const char *scheme, const struct where *w, long long port, const char *health, char *msg,
		 size_t msgsz)
{
	char url[700];
	if (w->ip[0] ? cm_pathf(url, sizeof url, "%s://%s:%lld%s", scheme, w->ip, port, health) < 0
		     : cm_pathf(url, sizeof url, "%s://127.0.0.1:%lld%s", scheme, w->host_port, health) < 0) {
		snprintf(msg, msgsz, "the health URL is too long");
		return -1;
	}
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L); /* a container's own certificate */
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLcode rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		snprintf(msg, msgsz, "GET %s: %s", health, curl_easy_strerror(rc));
		return -1;
	}
	long code = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (code < 200 || code >= 400) {
		snprintf(msg, msgsz, "GET %s answered %ld", health, code);
		return -1;
	}
	return 0;
}

/* Waits until the new container answers its health check (or exits, or time is up). */
static int wait_healthy(struct ctx *c, const char *id, const char *scheme, long long port, const struct where *w,
			const char *health, struct cm_error *err)
{
	CURL *h = curl_easy_init();
	if (!h)
		return cm_err_internal(err, "out of memory");
	char msg[300] = "no check yet";
	int64_t deadline = cm_monotonic_ms() + SWAP_WAIT_MS;
	int rc = -1;
	while (!c->rn->stop) {
		if (app_probe(h, scheme, w, port, health, msg, sizeof msg) == 0) {
			rc = 0;
			break;
		}
		bool running = true;
		struct where w2;
		struct cm_error e2;
		if (app_container_state(c, id, port, &running, &w2, &e2) == 0 && !running) {
			snprintf(msg + strlen(msg), sizeof msg - strlen(msg), " (the container exited)");
			break;
		}
		if (cm_monotonic_ms() > deadline)
			break;
		usleep(CHECK_MS * 1000);
	}
	curl_easy_cleanup(h);
	if (rc < 0)
		cm_err_set(err, 422, "unhealthy", "APP_UNHEALTHY", "health", "the new container did not become healthy: %s", msg);
	return rc;
}

/* ---- jobs ---- */

/* The image for a create/update: built from the staged context as cm-app-NAME:GEN, or the
 * image:REF as it is. tag/image_id/port filled; *built tells whether the image is ours. */
static int app_image(struct ctx *c, yajl_val args, const char *name, long long gen, char tag[400], char image_id[80],
		     long long *port, bool *built, struct cm_error *err)
{
	const char *image = cm_json_get_str(args, "image");
	*built = false;
	if (image) {
		if (cm_pathf(tag, 400, "%s", image) < 0)
			return cm_err_validation(err, "INVALID_VALUE", "src", "the image reference is too long");
	} else {
		char path[PATH_MAX], what[128];
		if (context_path(c, cm_json_get_str(args, "context"), path, sizeof path, err) < 0)
			return -1;
		snprintf(tag, 400, "cm-app-%s:%lld-%.8s", name, gen, c->rn->instance);
		snprintf(what, sizeof what, "app %s", name);
		/* the context stays until the job ends (apps_job): a re-run after a crash builds again */
		int rc = build_context(c, path, cm_json_get_str(args, "build_dir"), cm_json_get_str(args, "dockerfile"), tag, what,
				       image_id, NULL, 0, err);
		if (rc < 0)
			return -1;
		*built = true;
	}
	long long exposed = 0;
	if (image_info(c, tag, image_id, &exposed, err) < 0)
		goto fail;
	long long asked = 0;
	cm_json_get_int(args, "port", &asked);
	*port = asked > 0 ? asked : exposed;
	const char *lifetime = cm_json_get_str(args, "lifetime");
	if (!*port && lifetime && !strcmp(lifetime, "service")) {
		cm_err_validation(err, "PORT_REQUIRED", "port", "the app's image exposes no tcp port (EXPOSE) and no port was given");
		goto fail;
	}
	return 0;
fail:
	if (*built)
		app_rm_image(c, tag);
	return -1;
}

static int job_create(struct ctx *c, const char *name, yajl_val args, char **result, struct cm_error *err)
{
	struct app old;
	struct cm_error e0;
	if (app_load(c, name, &old, &e0) == 0) {
		if (old.last_job == c->job_id) {
			/* this job made it before the runner was interrupted */
			*result = strdup("{}");
			return 0;
		}
		return cm_err_set(err, 409, "conflict", "APP_EXISTS", "name", "an app named %s already exists", name);
	}
	char tag[400], image_id[80] = "", id[80] = "";
	long long port = 0;
	struct where w = {"", 0};
	bool built = false;
	if (app_image(c, args, name, 1, tag, image_id, &port, &built, err) < 0)
		return -1;
	const char *lifetime = cm_json_get_str(args, "lifetime");
	bool service = lifetime && !strcmp(lifetime, "service");
	const char *user = cm_json_get_str(args, "user") ? cm_json_get_str(args, "user") : "";
	if (service && app_service_up(c, name, 1, tag, port, user, id, &w, err) < 0)
		goto fail;
	int64_t now = cm_now_ms();
	long long asked = 0;
	cm_json_get_int(args, "port", &asked);
	if (app_exec(c,
		     "INSERT INTO apps(name, src, scheme, health, lifetime, build_dir, port, container_port, image, image_id, "
		     "built, generation, docker_id, host_port, container_ip, status, created_at, updated_at, last_job, user) "
		     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
		     "ttttttiittitittiiit", name, cm_json_get_str(args, "src"), cm_json_get_str(args, "scheme"),
		     cm_json_get_str(args, "health"), lifetime, cm_json_get_str(args, "build_dir"), asked, port, tag, image_id,
		     (long long)built, service ? id : NULL, w.host_port, w.ip[0] ? w.ip : NULL, service ? "starting" : "ready",
		     (long long)now, (long long)now, (long long)c->job_id, user) < 0) {
		cm_err_internal(err, "cannot record the app");
		goto fail;
	}
	app_sweep(c, name, service ? id : NULL, built ? tag : NULL);
	*result = strdup("{}");
	return 0;
fail:
	if (id[0])
		app_rm_container(c, id);
	if (built)
		app_rm_image(c, tag);
	return -1;
}

static int job_update(struct ctx *c, const char *name, yajl_val args, char **result, struct cm_error *err)
{
	struct app old;
	if (app_load(c, name, &old, err) < 0)
		return -1;
	if (old.last_job == c->job_id) {
		/* swapped before the runner was interrupted: only the clean-up may be missing */
		app_sweep(c, name, old.docker_id[0] ? old.docker_id : NULL, old.built ? old.image : NULL);
		*result = strdup("{}");
		return 0;
	}
	long long gen = old.generation + 1;
	char tag[400], image_id[80] = "", id[80] = "";
	long long port = 0;
	struct where w = {"", 0};
	bool built = false;
	if (app_image(c, args, name, gen, tag, image_id, &port, &built, err) < 0)
		return -1;
	const char *lifetime = cm_json_get_str(args, "lifetime");
	const char *scheme = cm_json_get_str(args, "scheme"), *health = cm_json_get_str(args, "health");
	bool service = lifetime && !strcmp(lifetime, "service");
	const char *user = cm_json_get_str(args, "user") ? cm_json_get_str(args, "user") : old.user;
	if (service) {
		if (app_service_up(c, name, gen, tag, port, user, id, &w, err) < 0)
			goto fail;
		/* the old container keeps serving (the row still names it) until this one is healthy */
		if (wait_healthy(c, id, scheme ? scheme : "http", port, &w, health ? health : "/", err) < 0)
			goto fail;
	}
	long long asked = 0;
	cm_json_get_int(args, "port", &asked);
	int64_t now = cm_now_ms();
	/* the swap: from here on the gate sends requests to the new container */
	if (app_exec(c,
		     "UPDATE apps SET src = ?, scheme = ?, health = ?, lifetime = ?, build_dir = ?, port = ?, "
		     "container_port = ?, image = ?, image_id = ?, built = ?, generation = ?, docker_id = ?, host_port = ?, "
		     "container_ip = ?, status = ?, failures = 0, last_error = NULL, last_check = ?, last_ok = ?, "
		     "restart_streak = 0, next_restart_at = NULL, updated_at = ?, last_job = ?, user = ? WHERE name = ?",
		     "tttttiittiitittiiiitt", cm_json_get_str(args, "src"), scheme, health, lifetime, cm_json_get_str(args, "build_dir"),
		     asked, port, tag, image_id, (long long)built, gen, service ? id : NULL, w.host_port, w.ip[0] ? w.ip : NULL,
		     service ? "healthy" : "ready", (long long)now, (long long)now, (long long)now, (long long)c->job_id,
		     user, name) < 0) {
		cm_err_internal(err, "cannot record the app");
		goto fail;
	}
	if (old.docker_id[0])
		usleep(DRAIN_MS * 1000);
	/* the old generation, and whatever an interrupted run of a job left */
	app_sweep(c, name, service ? id : NULL, built ? tag : NULL);
	*result = strdup("{}");
	return 0;
fail:
	if (id[0])
		app_rm_container(c, id);
	if (built && strcmp(tag, old.image))
		app_rm_image(c, tag);
	return -1;
}

static int job_delete(struct ctx *c, const char *name, char **result, struct cm_error *err)
{
	struct app a;
	if (app_load(c, name, &a, err) < 0)
		return -1;
	/* the route goes first (the gate answers 404 for a deleting app) */
	if (app_exec(c, "UPDATE apps SET status = 'deleting', updated_at = ? WHERE name = ?", "it", (long long)cm_now_ms(),
		     name) < 0)
		return cm_err_internal(err, "cannot record the app");
	app_rm_container(c, a.docker_id);
	if (a.built)
		app_rm_image(c, a.image);
	app_sweep(c, name, NULL, NULL);
	if (app_exec(c, "DELETE FROM apps WHERE name = ?", "t", name) < 0)
		return cm_err_internal(err, "cannot remove the app's row");
	*result = strdup("{}");
	return 0;
}

/* A dead service container: start it again (or make a new one when it is gone). */
static int job_restart(struct ctx *c, const char *name, char **result, struct cm_error *err)
{
	struct app a;
	if (app_load(c, name, &a, err) < 0)
		return -1;
	*result = strdup("{}");
	if (strcmp(a.lifetime, "service") || !strcmp(a.status, "deleting"))
		return 0;
	bool running = false;
	struct where w;
	struct cm_error e2;
	int st = a.docker_id[0] ? app_container_state(c, a.docker_id, a.container_port, &running, &w, &e2) : -1;
	if (st == 0 && running)
		return 0; /* came back by itself */
	char id[80] = "";
	if (st == 0) {
		snprintf(id, sizeof id, "%s", a.docker_id);
		if (app_container_start(c, id, err) < 0 || app_container_state(c, id, a.container_port, &running, &w, err) < 0)
			goto record;
	} else if (app_service_up(c, name, a.generation, a.image, a.container_port, a.user, id, &w, err) < 0) {
		goto record;
	}
	cm_info("app %s: restarted its container", name);
	/* a restart may give it another address and host port */
	app_exec(c,
		 "UPDATE apps SET docker_id = ?, host_port = ?, container_ip = ?, status = 'starting', failures = 0, "
		 "updated_at = ? WHERE name = ?",
		 "titit", id, w.host_port, w.ip[0] ? w.ip : NULL, (long long)cm_now_ms(), name);
	return 0;
record:
	app_exec(c, "UPDATE apps SET last_error = ?, updated_at = ? WHERE name = ?", "tit", err->message, (long long)cm_now_ms(),
		 name);
	return -1;
}

int apps_job(struct ctx *c, const char *kind, const char *key, yajl_val args, char **result, struct cm_error *err)
{
	const char *name = cm_json_get_str(args, "name");
	if (!name || !cm_valid_app_name(name))
		return cm_err_internal(err, "app job without a valid name (%s)", key);
	if (!strcmp(kind, "app.create") || !strcmp(kind, "app.update")) {
		int rc = !strcmp(kind, "app.create") ? job_create(c, name, args, result, err) : job_update(c, name, args, result, err);
		char path[PATH_MAX];
		struct cm_error e2;
		if (cm_json_get_str(args, "context") && context_path(c, cm_json_get_str(args, "context"), path, sizeof path, &e2) == 0)
			unlink(path);
		return rc;
	}
	if (!strcmp(kind, "app.delete"))
		return job_delete(c, name, result, err);
	if (!strcmp(kind, "app.restart"))
		return job_restart(c, name, result, err);
	if (!strcmp(kind, "app.run"))
		return app_job_run(c, name, args, result, err);
	return cm_err_internal(err, "unknown job kind %s", kind);
}
