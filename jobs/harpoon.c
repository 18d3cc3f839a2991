/* harpoon.c: the jobs behind start_container / stop_container / shutdown.
 *
 *   h.ensure   {image, ports}  build the definition if its hash has no image yet, create and
 *                              start the container, honour wait_condition, record it
 *   h.stop     {image}         stop and remove the definition's containers
 *   h.teardown {}              remove every container start_container made (shutdown)
 *
 * Jobs of one definition share the key "h:NAME", so they run in order; different definitions
 * run in parallel. Every job is safe to run again after a crash. */
#include "config.h"
#include "runner.h"
#include "imagedef.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define INSTANCE_LABEL "io.container-manager.instance"
#define HARPOON_LABEL "io.container-manager.harpoon"
#define DEF_LABEL "io.container-manager.def"

static int exec_sql_text(struct ctx *c, const char *sql, const char *a, const char *b, int64_t n, struct cm_error *err)
{
	for (int attempt = 0; attempt < 50; attempt++) {
		sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
		if (!st)
			return -1;
		if (a)
			sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
		if (b)
			sqlite3_bind_text(st, 2, b, -1, SQLITE_TRANSIENT);
		if (sqlite3_bind_parameter_count(st) >= 3)
			sqlite3_bind_int64(st, 3, n);
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			return 0;
		if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
			return cm_db_fail(&c->db, err, "harpoon state");
		usleep(50000);
	}
	return cm_db_fail(&c->db, err, "harpoon state");
}

/* Lists this instance's start_container containers (of one definition, or all). */
static yajl_val list_harpoon(struct ctx *c, const char *image, struct cm_error *err)
{
	struct cm_buf f = {0}, path = {0};
	cm_buf_printf(&f, "{\"label\":[\"" INSTANCE_LABEL "=%s\",\"" HARPOON_LABEL "%s%s\"]}", c->rn->instance,
		      image ? "=" : "", image ? image : "");
	cm_buf_puts(&path, "/containers/json?all=1&filters=");
	cm_buf_urlenc(&path, cm_buf_str(&f));
	cm_buf_free(&f);
	struct cm_buf resp = {.limit = 32 << 20};
	long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&path), NULL, &resp, 60, err);
	cm_buf_free(&path);
	yajl_val list = NULL;
	if (st == 200)
		list = cm_json_parse(cm_buf_str(&resp), resp.len, err);
	else if (st > 0)
		cm_err_internal(err, "container list failed (%ld)", st);
	cm_buf_free(&resp);
	if (list && !YAJL_IS_ARRAY(list)) {
		yajl_tree_free(list);
		list = NULL;
		cm_err_internal(err, "container list is not an array");
	}
	return list;
}

static int remove_container(struct ctx *c, const char *id, bool graceful, struct cm_error *err)
{
	char path[200];
	struct cm_buf r = {.limit = 1 << 20};
	if (graceful) {
		snprintf(path, sizeof path, "/containers/%s/stop?t=5", id);
		cm_docker_call(&c->docker, "POST", path, NULL, &r, 30, err);
		r.len = 0;
	}
	snprintf(path, sizeof path, "/containers/%s?force=1&v=1", id);
	long st = cm_docker_call(&c->docker, "DELETE", path, NULL, &r, 60, err);
	cm_buf_free(&r);
	if (st == 204 || st == 404)
		return 0;
	if (st < 0)
		return -1;
	return cm_err_internal(err, "removing container %.20s failed (%ld)", id, st);
}

/* Removes the definition's containers except keep (NULL: all). */
static int remove_all(struct ctx *c, const char *image, const char *keep, bool graceful, struct cm_error *err)
{
	yajl_val list = list_harpoon(c, image, err);
	if (!list)
		return -1;
	int rc = 0;
	for (size_t i = 0; i < list->u.array.len; i++) {
		const char *id = cm_json_get_str(list->u.array.values[i], "Id");
		if (id && (!keep || strcmp(id, keep)) && remove_container(c, id, graceful, err) < 0)
			rc = -1;
	}
	yajl_tree_free(list);
	return rc;
}

/* Makes sure the definition's image exists; *tag gets its name. */
static int ensure_image(struct ctx *c, const char *image, yajl_val def, char *tag, size_t tagsz, struct cm_error *err)
{
	struct cm_buf tar = {0};
	char hash[65];
	if (cm_imagedef_pack(def, &tar, hash, err) < 0) {
		cm_buf_free(&tar);
		return -1;
	}
	snprintf(tag, tagsz, "cm-def-%s:%.16s", image, hash);
	int ex = docker_image_exists(c, tag, err);
	if (ex != 0) {
		cm_buf_free(&tar);
		return ex < 0 ? -1 : 0;
	}
	struct cm_buf labels = {0};
	cm_buf_printf(&labels, "{\"" DEF_LABEL "\":\"%s\",\"" DEF_LABEL ".hash\":\"%s\"}", image, hash);
	char what[128];
	snprintf(what, sizeof what, "definition %s", image);
	struct build_opts o = {.name = image, .hash = hash, .tag = tag, .dockerfile = ".cm-Dockerfile",
			       .labels_json = cm_buf_str(&labels), .what = what, .mem = tar.data, .mem_len = tar.len};
	int rc = docker_build(c, &o, NULL, err);
	cm_buf_free(&labels);
	cm_buf_free(&tar);
	return rc;
}

/* ------------------------------------------------------------------ container */

/* user: "uid:gid" (the definition's, or APP_USER_UID), never the image's own USER. */
static char *create_body(struct ctx *c, const char *image, const char *tag, yajl_val ports, const char *user)
{
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	char buf[64];
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "Image", tag);
	cm_jg_kv_str(g, "User", user);
	cm_jg_str(g, "Labels");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, INSTANCE_LABEL, c->rn->instance);
	cm_jg_kv_str(g, HARPOON_LABEL, image);
	yajl_gen_map_close(g);
	emit_exposed_ports(g, ports);
	cm_jg_str(g, "HostConfig");
	yajl_gen_map_open(g);
	emit_confinement(g, c->rn->cfg.default_memory, c->rn->cfg.default_pids, c->rn->cfg.default_cpus);
	cm_jg_str(g, "PortBindings");
	yajl_gen_map_open(g);
	for (size_t i = 0; YAJL_IS_ARRAY(ports) && i < ports->u.array.len; i++) {
		yajl_val p = ports->u.array.values[i];
		long long cont = 0, host = 0;
		cm_json_get_int(p, "container", &cont);
		cm_json_get_int(p, "host", &host);
		snprintf(buf, sizeof buf, "%lld/%s", cont, cm_json_get_str(p, "protocol"));
		cm_jg_str(g, buf);
		yajl_gen_array_open(g);
		yajl_gen_map_open(g);
		const char *ip = cm_json_get_str(p, "ip");
		cm_jg_kv_str(g, "HostIp", ip && *ip ? ip : c->rn->cfg.publish_address);
		snprintf(buf, sizeof buf, "%lld", host);
		cm_jg_kv_str(g, "HostPort", host ? buf : "");
		yajl_gen_map_close(g);
		yajl_gen_array_close(g);
	}
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	return cm_jg_finish(g);
}

/* {"4545": 32772, ...} from inspect's NetworkSettings.Ports */
static char *ports_json(yajl_val inspect)
{
	yajl_val pm = cm_json_get(cm_json_get(inspect, "NetworkSettings"), "Ports");
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	yajl_gen_map_open(g);
	for (size_t i = 0; YAJL_IS_OBJECT(pm) && i < pm->u.object.len; i++) {
		yajl_val b = pm->u.object.values[i];
		if (!YAJL_IS_ARRAY(b) || b->u.array.len == 0)
			continue;
		const char *hp = cm_json_get_str(b->u.array.values[0], "HostPort");
		char key[32];
		snprintf(key, sizeof key, "%s", pm->u.object.keys[i]);
		char *slash = strchr(key, '/');
		/* tcp ports by number (harpoon's shape); other protocols keep their suffix */
		if (slash && !strcmp(slash, "/tcp"))
			*slash = '\0';
		cm_jg_str(g, key);
		cm_jg_int(g, hp ? atoll(hp) : 0);
	}
	yajl_gen_map_close(g);
	return cm_jg_finish(g);
}

static bool tcp_open(const char *ip, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
		return false;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	bool ok = false;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		ok = true;
	} else if (errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (poll(&p, 1, 1000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
			ok = true;
	}
	close(fd);
	return ok;
}

/* Runs argv in the container; returns its exit code, or -1 (err) when it could not run. */
static int exec_in(struct ctx *c, const char *id, yajl_val argv, struct cm_error *err)
{
	long long code = -1;
	if (docker_exec_argv(c, id, argv, NULL, NULL, 60, &code, err) < 0)
		return -1;
	return (int)code;
}

/* Waits for the definition's condition; 0 when it holds, -1 (err) when it did not in time. */
static int wait_condition(struct ctx *c, const char *image, const char *id, yajl_val wait, struct cm_error *err)
{
	if (!YAJL_IS_OBJECT(wait))
		return 0;
	yajl_val cmd = cm_json_get(wait, "command");
	yajl_val ports = cm_json_get(wait, "ports");
	yajl_val tv = cm_json_get(wait, "timeout"), iv = cm_json_get(wait, "interval");
	double timeout = YAJL_IS_NUMBER(tv) ? YAJL_GET_DOUBLE(tv) : 60;
	double interval = YAJL_IS_NUMBER(iv) ? YAJL_GET_DOUBLE(iv) : 0.5;
	int64_t deadline = cm_monotonic_ms() + (int64_t)(timeout * 1000);
	char last[300] = "not checked yet";
	for (;;) {
		yajl_val insp = NULL;
		long st = docker_inspect(c, id, &insp, err);
		if (st != 200) {
			if (insp)
				yajl_tree_free(insp);
			return st < 0 ? -1 : cm_err_set(err, 422, "start_error", "CONTAINER_EXITED", "image",
							"the container of %s vanished while waiting for it", image);
		}
		yajl_val state = cm_json_get(insp, "State");
		bool running = YAJL_IS_TRUE(cm_json_get(state, "Running"));
		long long code = 0;
		cm_json_get_int(state, "ExitCode", &code);
		const char *ip = cm_json_get_str(cm_json_get(insp, "NetworkSettings"), "IPAddress");
		char ipbuf[64];
		snprintf(ipbuf, sizeof ipbuf, "%s", ip ? ip : "");
		yajl_tree_free(insp);
		if (!running)
			return cm_err_set(err, 422, "start_error", "CONTAINER_EXITED", "image",
					  "the container of %s exited (code %lld) before its wait_condition held", image, code);
		bool ok = true;
		for (size_t i = 0; ok && YAJL_IS_ARRAY(ports) && i < ports->u.array.len; i++) {
			int port = (int)YAJL_GET_INTEGER(ports->u.array.values[i]);
			if (!ipbuf[0] || !tcp_open(ipbuf, port)) {
				ok = false;
				snprintf(last, sizeof last, "port %d did not accept connections", port);
			}
		}
		if (ok && YAJL_IS_ARRAY(cmd)) {
			struct cm_error e2 = {0};
			int rc = exec_in(c, id, cmd, &e2);
			if (rc != 0) {
				ok = false;
				if (rc < 0)
					snprintf(last, sizeof last, "the command could not run: %s", e2.message);
				else
					snprintf(last, sizeof last, "the command exited with %d", rc);
			}
		}
		if (ok)
			return 0;
		if (cm_monotonic_ms() + (int64_t)(interval * 1000) > deadline || c->rn->stop)
			return cm_err_set(err, 504, "timeout", "WAIT_CONDITION_TIMEOUT", "image",
					  "the wait_condition of %s did not hold within %g s (%s)", image, timeout, last);
		usleep((useconds_t)(interval * 1e6));
	}
}

static int load_def(struct ctx *c, const char *image, yajl_val *def, struct cm_error *err)
{
	static const char *sql = "SELECT def FROM image_defs WHERE name = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, image, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	*def = NULL;
	if (rc == SQLITE_ROW)
		*def = cm_json_parse(cm_col_str(st, 0), (size_t)sqlite3_column_bytes(st, 0), err);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return cm_err_set(err, 404, "not_found", "IMAGE_DEFINITION_NOT_FOUND", "image", "no definition named %s", image);
	if (rc != SQLITE_ROW)
		return cm_db_fail(&c->db, err, "read definition");
	return *def ? 0 : -1;
}

static char *result_json(const char *id, const char *ports)
{
	struct cm_buf b = {0};
	cm_buf_printf(&b, "{\"container_id\":\"%s\",\"ports\":%s}", id, ports);
	char *s = strdup(cm_buf_str(&b));
	cm_buf_free(&b);
	return s;
}

/* The supervisor sets settings.shutting_down before it tears down: a start that is still on
 * its way must not leave a container behind. */
static bool stack_shutting_down(struct ctx *c)
{
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&c->db, "SELECT value FROM settings WHERE key = 'shutting_down'", &err);
	if (!st)
		return false;
	bool on = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 1;
	sqlite3_reset(st);
	return on;
}

static int h_ensure(struct ctx *c, const char *image, yajl_val args, char **result, struct cm_error *err)
{
	/* a re-run after a crash: the container may be up already */
	static const char *cur = "SELECT state, docker_id, ports FROM harpoon WHERE image = ? AND job_id = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, cur, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, image, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, c->job_id);
	if (sqlite3_step(st) == SQLITE_ROW && !strcmp(cm_col_str(st, 0), "running") && cm_col_str(st, 1)) {
		*result = result_json(cm_col_str(st, 1), cm_col_str(st, 2) ? cm_col_str(st, 2) : "{}");
		sqlite3_reset(st);
		return *result ? 0 : cm_err_internal(err, "out of memory");
	}
	sqlite3_reset(st);

	yajl_val def = NULL;
	if (stack_shutting_down(c))
		return cm_err_set(err, 503, "shutting_down", "SHUTTING_DOWN", NULL, "the container manager is shutting down");
	if (load_def(c, image, &def, err) < 0)
		return -1;
	char tag[128], id[80] = "";
	char *body = NULL, *ports = NULL;
	int rc = -1;
	struct cm_buf r = {.limit = 4 << 20};
	/* containers of this definition left by an earlier run (exited, failed) go first */
	if (remove_all(c, image, NULL, false, err) < 0)
		goto out;
	/* refused before anything is built: root only where ALLOW_ROOT_CONTAINERS allows it */
	char uid[64];
	if (cm_config_container_user(&c->rn->cfg, cm_json_get_str(def, "user"), uid, "user", err) < 0) {
		cm_err_prefix(err, "definition %s: ", image);
		goto out;
	}
	if (ensure_image(c, image, def, tag, sizeof tag, err) < 0)
		goto out;
	body = create_body(c, image, tag, cm_json_get(args, "ports"), uid);
	if (!body) {
		cm_err_internal(err, "out of memory");
		goto out;
	}
	char path[200];
	snprintf(path, sizeof path, "/containers/create?name=cm-%s-%s-%lld", c->rn->instance, image, (long long)c->job_id);
	long hs = cm_docker_call(&c->docker, "POST", path, body, &r, 120, err);
	if (hs == 409) { /* a half-done earlier attempt of this very job */
		char old[200];
		snprintf(old, sizeof old, "cm-%s-%s-%lld", c->rn->instance, image, (long long)c->job_id);
		remove_container(c, old, false, err);
		r.len = 0;
		hs = cm_docker_call(&c->docker, "POST", path, body, &r, 120, err);
	}
	if (hs != 201) {
		if (hs > 0) {
			char msg[300];
			cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
			cm_err_set(err, hs == 404 ? 422 : 500, "start_error", "CREATE_FAILED", "image", "creating the container of %s failed: %s",
				   image, msg);
		}
		goto out;
	}
	yajl_val cv = cm_json_parse(cm_buf_str(&r), r.len, err);
	snprintf(id, sizeof id, "%s", cv && cm_json_get_str(cv, "Id") ? cm_json_get_str(cv, "Id") : "");
	if (cv)
		yajl_tree_free(cv);
	if (!id[0]) {
		cm_err_internal(err, "Docker did not name the new container");
		goto out;
	}
	r.len = 0;
	snprintf(path, sizeof path, "/containers/%s/start", id);
	hs = cm_docker_call(&c->docker, "POST", path, NULL, &r, 120, err);
	if (hs != 204 && hs != 304) {
		if (hs > 0) {
			char msg[300];
			cm_docker_message(cm_buf_str(&r), msg, sizeof msg);
			bool busy = strstr(msg, "already allocated") || strstr(msg, "address already in use");
			cm_err_set(err, busy ? 409 : 500, busy ? "conflict" : "start_error", busy ? "PORT_IN_USE" : "START_FAILED",
				   busy ? "ports" : "image", "starting the container of %s failed: %s", image, msg);
		}
		goto out;
	}
	yajl_val insp = NULL;
	hs = docker_inspect(c, id, &insp, err);
	if (hs != 200) {
		if (insp)
			yajl_tree_free(insp);
		if (hs > 0)
			cm_err_internal(err, "inspect after start failed (%ld)", hs);
		goto out;
	}
	ports = ports_json(insp);
	yajl_tree_free(insp);
	if (!ports) {
		cm_err_internal(err, "out of memory");
		goto out;
	}
	if (wait_condition(c, image, id, cm_json_get(def, "wait"), err) < 0)
		goto out;
	if (stack_shutting_down(c)) {
		cm_err_set(err, 503, "shutting_down", "SHUTTING_DOWN", NULL, "the container manager is shutting down");
		goto out;
	}
	static const char *done = "UPDATE harpoon SET state = 'running', docker_id = ?1, ports = ?2, tag = ?4, updated_at = ?5 "
				  "WHERE image = ?3 AND job_id = ?6";
	int ok = -1;
	for (int attempt = 0; attempt < 50 && ok < 0; attempt++) {
		sqlite3_stmt *u = cm_db_stmt(&c->db, done, err);
		if (!u)
			break;
		sqlite3_bind_text(u, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(u, 2, ports, -1, SQLITE_STATIC);
		sqlite3_bind_text(u, 3, image, -1, SQLITE_STATIC);
		sqlite3_bind_text(u, 4, tag, -1, SQLITE_STATIC);
		sqlite3_bind_int64(u, 5, cm_now_ms());
		sqlite3_bind_int64(u, 6, c->job_id);
		int s2 = sqlite3_step(u);
		sqlite3_reset(u);
		if (s2 == SQLITE_DONE)
			ok = 0;
		else if (s2 != SQLITE_BUSY)
			break;
		else
			usleep(50000);
	}
	if (ok < 0) {
		cm_db_fail(&c->db, err, "record the container");
		goto out;
	}
	*result = result_json(id, ports);
	rc = *result ? 0 : cm_err_internal(err, "out of memory");
out:
	if (rc < 0) {
		if (id[0]) {
			struct cm_error e2;
			remove_container(c, id, false, &e2);
		}
		struct cm_error e3;
		exec_sql_text(c, "UPDATE harpoon SET state = 'failed' WHERE image = ?1 AND job_id = ?3", image, NULL, c->job_id,
			      &e3);
	}
	cm_buf_free(&r);
	free(body);
	free(ports);
	yajl_tree_free(def);
	return rc;
}

static int h_stop(struct ctx *c, const char *image, char **result, struct cm_error *err)
{
	if (remove_all(c, image, NULL, true, err) < 0)
		return -1;
	if (exec_sql_text(c, "DELETE FROM harpoon WHERE image = ?1 AND job_id = ?3", image, NULL, c->job_id, err) < 0)
		return -1;
	*result = strdup("{}");
	return *result ? 0 : cm_err_internal(err, "out of memory");
}

struct rm_arg {
	struct runner *rn;
	const char *id;
	int rc;
};

static void *rm_thread(void *arg)
{
	struct rm_arg *a = arg;
	struct cm_docker d;
	struct cm_error err;
	a->rc = -1;
	if (cm_docker_init(&d, a->rn->cfg.docker_host, &err) == 0) {
		char path[200];
		snprintf(path, sizeof path, "/containers/%s?force=1&v=1", a->id);
		struct cm_buf r = {.limit = 1 << 20};
		long st = cm_docker_call(&d, "DELETE", path, NULL, &r, 60, &err);
		a->rc = st == 204 || st == 404 ? 0 : -1;
		cm_buf_free(&r);
		cm_docker_free(&d);
	}
	return NULL;
}

/* Removes every start_container container of this instance, all at once. Returns how many
 * went, or -1. */
static long remove_every(struct ctx *c, struct cm_error *err)
{
	yajl_val list = list_harpoon(c, NULL, err);
	if (!list)
		return -1;
	size_t n = list->u.array.len;
	struct rm_arg *a = calloc(n ? n : 1, sizeof *a);
	pthread_t *th = calloc(n ? n : 1, sizeof *th);
	int failed = 0;
	if (!a || !th) {
		free(a);
		free(th);
		yajl_tree_free(list);
		return cm_err_internal(err, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		a[i].rn = c->rn;
		a[i].id = cm_json_get_str(list->u.array.values[i], "Id");
		if (!a[i].id || pthread_create(&th[i], NULL, rm_thread, &a[i]) != 0) {
			a[i].id = NULL;
			failed++;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (a[i].id) {
			pthread_join(th[i], NULL);
			if (a[i].rc < 0)
				failed++;
		}
	free(a);
	free(th);
	yajl_tree_free(list);
	if (failed)
		return cm_err_internal(err, "%d container(s) could not be removed", failed);
	return (long)n;
}

/* Starts still running (other executors); they see shutting_down before they record anything. */
static int64_t starts_running(struct ctx *c)
{
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&c->db, "SELECT count(*) FROM jobs WHERE kind = 'h.ensure' AND status = 'running'", &err);
	if (!st)
		return 0;
	int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	return n;
}

/* Shutdown: every start_container container goes. A start that was creating its container
 * when this began removes it itself (it checks shutting_down); one more pass after those
 * ended (bounded) catches a container created in between. */
static int h_teardown(struct ctx *c, char **result, struct cm_error *err)
{
	long n = remove_every(c, err);
	if (n < 0)
		return -1;
	if (starts_running(c) > 0) {
		int64_t deadline = cm_monotonic_ms() + 10000;
		while (starts_running(c) > 0 && cm_monotonic_ms() < deadline)
			usleep(50000);
		long m = remove_every(c, err);
		if (m < 0)
			return -1;
		n += m;
	}
	if (exec_sql_text(c, "DELETE FROM harpoon", NULL, NULL, 0, err) < 0)
		return -1;
	struct cm_buf b = {0};
	cm_buf_printf(&b, "{\"removed\":%ld}", n);
	*result = strdup(cm_buf_str(&b));
	cm_buf_free(&b);
	return *result ? 0 : cm_err_internal(err, "out of memory");
}

int harpoon_job(struct ctx *c, const char *kind, const char *key, yajl_val args, char **result, struct cm_error *err)
{
	const char *image = cm_json_get_str(args, "image");
	if (!strcmp(kind, "h.teardown"))
		return h_teardown(c, result, err);
	if (!image || !cm_imagedef_valid_name(image) || !key || strncmp(key, "h:", 2) || strcmp(key + 2, image))
		return cm_err_internal(err, "malformed %s job", kind);
	if (!strcmp(kind, "h.ensure"))
		return h_ensure(c, image, args, result, err);
	if (!strcmp(kind, "h.stop"))
		return h_stop(c, image, result, err);
	return cm_err_internal(err, "unknown job kind %s", kind);
}

/* Start and dockerd restarts: containers no row vouches for go (a crashed stack's leftovers). */
int harpoon_reconcile(struct ctx *c, struct cm_error *err)
{
	yajl_val list = list_harpoon(c, NULL, err);
	if (!list)
		return -1;
	static const char *sql = "SELECT state, docker_id FROM harpoon WHERE image = ?";
	for (size_t i = 0; i < list->u.array.len; i++) {
		yajl_val ct = list->u.array.values[i];
		const char *id = cm_json_get_str(ct, "Id");
		const char *image = cm_json_get_str(cm_json_get(ct, "Labels"), HARPOON_LABEL);
		if (!id || !image)
			continue;
		sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
		if (!st)
			break;
		sqlite3_bind_text(st, 1, image, -1, SQLITE_STATIC);
		bool keep = false;
		if (sqlite3_step(st) == SQLITE_ROW) {
			const char *state = cm_col_str(st, 0), *did = cm_col_str(st, 1);
			keep = !strcmp(state, "starting") || !strcmp(state, "stopping") ||
			       (!strcmp(state, "running") && did && !strcmp(did, id));
		}
		sqlite3_reset(st);
		if (!keep) {
			cm_warn("removing start_container container %.12s (%s): no longer handed out", id, image);
			struct cm_error e2;
			remove_container(c, id, false, &e2);
		}
	}
	yajl_tree_free(list);
	return 0;
}

/* Event hook: a start_container container that died or vanished is not handed out again. */
void harpoon_event(struct ctx *c, const char *image, const char *action, const char *id)
{
	if (!image || !action || !id || (strcmp(action, "die") && strcmp(action, "destroy") && strcmp(action, "oom")))
		return;
	struct cm_error err;
	exec_sql_text(c, "UPDATE harpoon SET state = 'exited' WHERE image = ?1 AND docker_id = ?2 AND state = 'running'", image,
		      id, 0, &err);
}
