/* exec.c: what each job kind does to Docker, written so that running a job again after a
 * crash finishes it (create reuses a container it already made; recreate cleans up a
 * half-made replacement; delete treats "already gone" as done). */
#include "config.h"
#include "runner.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CAP_ADD_LIST "CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE"

/* Re-serialises a parsed value (caller frees); NULL when v is missing. */
/* "ExposedPorts" of a create body from [{container, protocol}, ...] (NULL: none). */
void emit_exposed_ports(yajl_gen g, yajl_val ports)
{
	char buf[48];
	cm_jg_str(g, "ExposedPorts");
	yajl_gen_map_open(g);
	for (size_t i = 0; YAJL_IS_ARRAY(ports) && i < ports->u.array.len; i++) {
		long long cont = 0;
		const char *proto = cm_json_get_str(ports->u.array.values[i], "protocol");
		cm_json_get_int(ports->u.array.values[i], "container", &cont);
		snprintf(buf, sizeof buf, "%lld/%s", cont, proto ? proto : "tcp");
		cm_jg_str(g, buf);
		yajl_gen_map_open(g);
		yajl_gen_map_close(g);
	}
	yajl_gen_map_close(g);
}

/* HostConfig keys every container gets: an init, no privileges, no new privileges, only the
 * capabilities a normal service needs, its limits (no swap beyond memory), the bridge network. */
void emit_confinement(yajl_gen g, int64_t memory, int64_t pids, double cpus)
{
	cm_jg_str(g, "Init");
	cm_jg_bool(g, true);
	cm_jg_str(g, "Privileged");
	cm_jg_bool(g, false);
	cm_jg_str(g, "SecurityOpt");
	yajl_gen_array_open(g);
	cm_jg_str(g, "no-new-privileges");
	yajl_gen_array_close(g);
	cm_jg_str(g, "CapDrop");
	yajl_gen_array_open(g);
	cm_jg_str(g, "ALL");
	yajl_gen_array_close(g);
	cm_jg_str(g, "CapAdd");
	yajl_gen_array_open(g);
	static const char *const caps[] = {CAP_ADD_LIST};
	for (size_t i = 0; i < CM_ARRAY_LEN(caps); i++)
		cm_jg_str(g, caps[i]);
	yajl_gen_array_close(g);
	cm_jg_kv_int(g, "Memory", memory);
	cm_jg_kv_int(g, "MemorySwap", memory);
	cm_jg_kv_int(g, "PidsLimit", pids);
	if (cpus > 0)
		cm_jg_kv_int(g, "NanoCpus", (long long)(cpus * 1e9 + 0.5));
	cm_jg_kv_str(g, "NetworkMode", "bridge");
}

static char *json_of(yajl_val v)
{
	if (!v)
		return NULL;
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	if (cm_jg_value(g, v) < 0) {
		yajl_gen_free(g);
		return NULL;
	}
	return cm_jg_finish(g);
}

static int docker_fail(struct cm_error *err, long status, struct cm_buf *resp, const char *what)
{
	char msg[400];
	cm_docker_message(cm_buf_str(resp), msg, sizeof msg);
	return cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", NULL, "%s failed (Docker %ld): %s", what, status, msg);
}

long docker_inspect(struct ctx *c, const char *name, yajl_val *out, struct cm_error *err)
{
	char path[256];
	snprintf(path, sizeof path, "/containers/%s/json", name);
	struct cm_buf resp = {0};
	*out = NULL;
	long st = cm_docker_call(&c->docker, "GET", path, NULL, &resp, 30, err);
	if (st == 200) {
		*out = cm_json_parse(cm_buf_str(&resp), resp.len, err);
		if (!*out)
			st = cm_err_internal(err, "unparsable inspect output");
	} else if (st > 0 && st != 404) {
		docker_fail(err, st, &resp, "inspect");
		st = -1;
	}
	cm_buf_free(&resp);
	return st;
}

static int discard_chunk(const char *data, size_t len, void *ud)
{
	(void)data, (void)len, (void)ud;
	return 0;
}

int docker_exec_argv(struct ctx *c, const char *id, yajl_val argv, cm_docker_chunk_cb out, void *ud, long timeout_s,
		     long long *code, struct cm_error *err)
{
	yajl_gen g = cm_jg_new();
	if (!g)
		return cm_err_internal(err, "out of memory");
	yajl_gen_map_open(g);
	cm_jg_str(g, "Cmd");
	cm_jg_value(g, argv);
	cm_jg_str(g, "AttachStdout");
	cm_jg_bool(g, true);
	cm_jg_str(g, "AttachStderr");
	cm_jg_bool(g, true);
	cm_jg_str(g, "Tty");
	cm_jg_bool(g, false);
	yajl_gen_map_close(g);
	char *body = cm_jg_finish(g);
	char path[200];
	snprintf(path, sizeof path, "/containers/%s/exec", id);
	struct cm_buf r = {0};
	long st = body ? cm_docker_call(&c->docker, "POST", path, body, &r, 30, err) : -1;
	free(body);
	char eid[80] = "";
	if (st == 201) {
		yajl_val v = cm_json_parse(cm_buf_str(&r), r.len, err);
		snprintf(eid, sizeof eid, "%s", v && cm_json_get_str(v, "Id") ? cm_json_get_str(v, "Id") : "");
		if (v)
			yajl_tree_free(v);
	}
	cm_buf_free(&r);
	if (st == 409 || st == 404)
		return cm_err_set(err, 409, "conflict", "CONTAINER_NOT_RUNNING", NULL, "the container is not running");
	if (!eid[0])
		return st < 0 ? -1 : cm_err_internal(err, "exec create failed (%ld)", st);
	/* attached: the answer ends when the process does */
	snprintf(path, sizeof path, "/exec/%s/start", eid);
	st = cm_docker_post_stream(&c->docker, path, "{\"Detach\":false,\"Tty\":false}", out ? out : discard_chunk, ud,
				   timeout_s, err);
	if (st < 0)
		return -1;
	if (st != 200)
		return cm_err_internal(err, "exec start failed (%ld)", st);
	snprintf(path, sizeof path, "/exec/%s/json", eid);
	for (int i = 0; i < 100; i++) {
		struct cm_buf j = {0};
		st = cm_docker_call(&c->docker, "GET", path, NULL, &j, 30, err);
		yajl_val v = st == 200 ? cm_json_parse(cm_buf_str(&j), j.len, err) : NULL;
		cm_buf_free(&j);
		bool done = v && !YAJL_IS_TRUE(cm_json_get(v, "Running")) && cm_json_get_int(v, "ExitCode", code);
		if (v)
			yajl_tree_free(v);
		if (done)
			return 0;
		if (st != 200)
			break;
		usleep(20000);
	}
	return cm_err_internal(err, "the command's exit code is unknown");
}

static yajl_val jpath(yajl_val v, const char *a, const char *b)
{
	v = cm_json_get(v, a);
	return b ? cm_json_get(v, b) : v;
}

static const char *jstr(yajl_val v, const char *a, const char *b)
{
	yajl_val x = jpath(v, a, b);
	return YAJL_IS_STRING(x) ? x->u.string : NULL;
}

/* Builds [{host, container, protocol}] from the requested ports and Docker's actual bindings. */
static char *actual_ports(const char *requested, yajl_val inspect)
{
	struct cm_error e;
	yajl_val req = cm_json_parse(requested, strlen(requested), &e);
	yajl_val bound = jpath(inspect, "NetworkSettings", "Ports");
	yajl_gen g = cm_jg_new();
	yajl_gen_array_open(g);
	for (size_t i = 0; req && YAJL_IS_ARRAY(req) && i < req->u.array.len; i++) {
		yajl_val p = req->u.array.values[i];
		long long host = 0, cont = 0;
		cm_json_get_int(p, "host", &host);
		cm_json_get_int(p, "container", &cont);
		const char *proto = cm_json_get_str(p, "protocol");
		char key[32];
		snprintf(key, sizeof key, "%lld/%s", cont, proto ? proto : "tcp");
		yajl_val list = cm_json_get(bound, key);
		if (YAJL_IS_ARRAY(list) && list->u.array.len > 0) {
			const char *hp = cm_json_get_str(list->u.array.values[0], "HostPort");
			if (hp)
				host = atoll(hp);
		}
		yajl_gen_map_open(g);
		cm_jg_kv_int(g, "host", host);
		cm_jg_kv_int(g, "container", cont);
		cm_jg_kv_str(g, "protocol", proto ? proto : "tcp");
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
	if (req)
		yajl_tree_free(req);
	return cm_jg_finish(g);
}

static int sync_row_locked(struct ctx *c, const char *cuid, yajl_val insp, struct cm_error *err)
{
	static const char *sel = "SELECT docker_id, ports FROM containers WHERE cuid = ?";
	static const char *upd =
		"UPDATE containers SET status = ?2, exit_code = ?3, started_at = ?4, finished_at = ?5, "
		"restart_count = ?6, ports_actual = ?7, updated_at = ?8, version = version + 1 "
		"WHERE cuid = ?1 AND (status IS NOT ?2 OR exit_code IS NOT ?3 OR started_at IS NOT ?4 OR "
		"finished_at IS NOT ?5 OR restart_count IS NOT ?6 OR ports_actual IS NOT ?7)";
	const char *id = jstr(insp, "Id", NULL);
	sqlite3_stmt *st = cm_db_stmt(&c->db, sel, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? 0 : cm_db_fail(&c->db, err, "sync");
	}
	bool same = id && cm_col_str(st, 0) && !strcmp(id, cm_col_str(st, 0));
	char *ports = same ? actual_ports(cm_col_str(st, 1), insp) : NULL;
	sqlite3_reset(st);
	if (!same)
		return 0;
	const char *status = jstr(insp, "State", "Status");
	yajl_val state = cm_json_get(insp, "State");
	long long exit_code = 0, restarts = 0;
	cm_json_get_int(state, "ExitCode", &exit_code);
	cm_json_get_int(insp, "RestartCount", &restarts);
	int64_t started = cm_parse_docker_time(cm_json_get_str(state, "StartedAt"));
	int64_t finished = cm_parse_docker_time(cm_json_get_str(state, "FinishedAt"));
	st = cm_db_stmt(&c->db, upd, err);
	if (!st) {
		free(ports);
		return -1;
	}
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, status ? status : "dead", -1, SQLITE_STATIC);
	if (status && (!strcmp(status, "exited") || !strcmp(status, "dead") || (!strcmp(status, "created") && finished)))
		sqlite3_bind_int64(st, 3, exit_code);
	if (started)
		sqlite3_bind_int64(st, 4, started);
	if (finished)
		sqlite3_bind_int64(st, 5, finished);
	sqlite3_bind_int64(st, 6, restarts);
	sqlite3_bind_text(st, 7, ports, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 8, cm_now_ms());
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	free(ports);
	if (rc != SQLITE_DONE)
		return cm_db_fail(&c->db, err, "sync");
	return 0;
}

/* Read and write in one transaction: the row's requested ports may change under a
 * concurrent job, and a stale read must not overwrite a newer answer. */
int sync_row(struct ctx *c, const char *cuid, yajl_val insp, struct cm_error *err)
{
	if (cm_db_begin(&c->db, err) < 0)
		return -1;
	if (sync_row_locked(c, cuid, insp, err) < 0) {
		cm_db_rollback(&c->db);
		return -1;
	}
	return cm_db_commit(&c->db, err);
}

int pending_job(struct ctx *c, const char *cuid)
{
	static const char *sql = "SELECT 1 FROM jobs WHERE cuid = ? AND status IN ('queued','running') LIMIT 1";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, &err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Inspects cuid's container and copies its state into the row. */
static int refresh(struct ctx *c, const char *cuid, struct cm_error *err)
{
	yajl_val insp;
	long st = docker_inspect(c, cuid, &insp, err);
	if (st < 0)
		return -1;
	if (st == 200) {
		int r = sync_row(c, cuid, insp, err);
		yajl_tree_free(insp);
		return r;
	}
	return 0;
}

static int app_dir(struct ctx *c, const char *cuid, char *out, size_t outsz, bool create, struct cm_error *err)
{
	if (snprintf(out, outsz, "%s/%s/app", c->rn->containers_dir, cuid) >= (int)outsz)
		return cm_err_internal(err, "path too long");
	if (!create)
		return 0;
	/* DATA/containers/<cuid> is 0700 (only this service reaches the files; Docker, as root,
	 * binds app/); app/ itself belongs to DEFAULT_USER_UID, the container's user */
	char *slash = strrchr(out, '/');
	*slash = '\0';
	int mrc = mkdir(out, 0700);
	*slash = '/';
	if ((mrc < 0 && errno != EEXIST) || (mkdir(out, 0755) < 0 && errno != EEXIST))
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot create %s: %s", out, strerror(errno));
	struct stat stt;
	if (lstat(out, &stt) < 0 || !S_ISDIR(stt.st_mode))
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "%s is not a directory", out);
	if ((stt.st_uid != c->rn->uid || stt.st_gid != c->rn->gid) && chown(out, c->rn->uid, c->rn->gid) < 0)
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot chown %s: %s", out, strerror(errno));
	return 0;
}

/* Docker's create body for a spec. */
static char *create_body(struct ctx *c, const char *cuid, const struct cm_spec *s, const char *dir)
{
	struct cm_error e;
	struct runner *rn = c->rn;
	yajl_val env = cm_json_parse(s->env, strlen(s->env), &e);
	yajl_val ports = cm_json_parse(s->ports, strlen(s->ports), &e);
	char *tags = cm_spec_tags_csv(s->tags);
	yajl_gen g = cm_jg_new();
	char buf[PATH_MAX + 64];
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "Image", s->image);
	cm_jg_str(g, "Cmd");
	cm_jg_raw(g, s->command);
	cm_jg_str(g, "Env");
	yajl_gen_array_open(g);
	for (size_t i = 0; env && i < env->u.object.len; i++) {
		struct cm_buf kv = {0};
		cm_buf_printf(&kv, "%s=%s", env->u.object.keys[i], YAJL_GET_STRING(env->u.object.values[i]));
		cm_jg_str(g, cm_buf_str(&kv));
		cm_buf_free(&kv);
	}
	snprintf(buf, sizeof buf, "CONTAINER_UID=%s", cuid);
	cm_jg_str(g, buf);
	struct cm_buf tg = {0};
	cm_buf_printf(&tg, "TAGS=%s", tags ? tags : "");
	cm_jg_str(g, cm_buf_str(&tg));
	cm_buf_free(&tg);
	yajl_gen_array_close(g);
	cm_jg_kv_str(g, "User", rn->cfg.default_uid);
	cm_jg_kv_str(g, "WorkingDir", "/app");
	cm_jg_str(g, "Labels");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "io.container-manager.cuid", cuid);
	cm_jg_kv_str(g, "io.container-manager.instance", rn->instance);
	cm_jg_kv_str(g, "com.docker.compose.project", cuid);
	cm_jg_kv_str(g, "com.docker.compose.service", "app");
	cm_jg_kv_str(g, "com.docker.compose.oneoff", "False");
	cm_jg_kv_str(g, "com.docker.compose.container-number", "1");
	snprintf(buf, sizeof buf, "%s/%s", rn->containers_dir, cuid);
	cm_jg_kv_str(g, "com.docker.compose.project.working_dir", buf);
	snprintf(buf, sizeof buf, "%s/%s/docker-compose.yml", rn->containers_dir, cuid);
	cm_jg_kv_str(g, "com.docker.compose.project.config_files", buf);
	yajl_gen_map_close(g);
	emit_exposed_ports(g, ports);
	cm_jg_str(g, "HostConfig");
	yajl_gen_map_open(g);
	cm_jg_str(g, "Binds");
	yajl_gen_array_open(g);
	snprintf(buf, sizeof buf, "%s:/app", dir);
	cm_jg_str(g, buf);
	yajl_gen_array_close(g);
	/* named volumes and allowed host directories, as validated (spec.c) */
	struct cm_error verr;
	yajl_val vols = s->volumes ? cm_json_parse(s->volumes, strlen(s->volumes), &verr) : NULL;
	if (vols && YAJL_IS_ARRAY(vols) && vols->u.array.len) {
		cm_jg_str(g, "Mounts");
		yajl_gen_array_open(g);
		for (size_t i = 0; i < vols->u.array.len; i++) {
			yajl_val m = vols->u.array.values[i];
			const char *type = cm_json_get_str(m, "type");
			yajl_gen_map_open(g);
			cm_jg_kv_str(g, "Type", type && !strcmp(type, "bind") ? "bind" : "volume");
			cm_jg_kv_str(g, "Source", cm_json_get_str(m, "source"));
			cm_jg_kv_str(g, "Target", cm_json_get_str(m, "target"));
			cm_jg_str(g, "ReadOnly");
			cm_jg_bool(g, YAJL_IS_TRUE(cm_json_get(m, "read_only")));
			if (type && !strcmp(type, "volume")) {
				/* never create a volume on the fly: POST /volumes makes them */
				cm_jg_str(g, "VolumeOptions");
				yajl_gen_map_open(g);
				cm_jg_str(g, "NoCopy");
				cm_jg_bool(g, false);
				yajl_gen_map_close(g);
			}
			yajl_gen_map_close(g);
		}
		yajl_gen_array_close(g);
	}
	if (vols)
		yajl_tree_free(vols);
	emit_confinement(g, s->memory, s->pids, s->cpus);
	cm_jg_str(g, "RestartPolicy");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "Name", "no");
	yajl_gen_map_close(g);
	cm_jg_str(g, "PortBindings");
	yajl_gen_map_open(g);
	for (size_t i = 0; ports && i < ports->u.array.len; i++) {
		long long cont = 0, host = 0;
		cm_json_get_int(ports->u.array.values[i], "container", &cont);
		cm_json_get_int(ports->u.array.values[i], "host", &host);
		snprintf(buf, sizeof buf, "%lld/%s", cont, cm_json_get_str(ports->u.array.values[i], "protocol"));
		cm_jg_str(g, buf);
		yajl_gen_array_open(g);
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "HostIp", rn->cfg.publish_address);
		snprintf(buf, sizeof buf, "%lld", host);
		cm_jg_kv_str(g, "HostPort", host ? buf : "");
		yajl_gen_map_close(g);
		yajl_gen_array_close(g);
	}
	yajl_gen_map_close(g);
	yajl_gen_map_close(g); /* HostConfig */
	yajl_gen_map_close(g);
	if (env)
		yajl_tree_free(env);
	if (ports)
		yajl_tree_free(ports);
	free(tags);
	return cm_jg_finish(g);
}

/* Refuses host ports that another managed container claims or that something already holds.
 * Ports this container currently publishes itself (own_actual) are not tested by binding. */
static int check_host_ports(struct ctx *c, const char *cuid, const char *ports_json, const char *own_actual,
			    struct cm_error *err)
{
	static const char *claimed =
		"SELECT c.cuid FROM containers c, json_each(c.ports) p WHERE c.cuid != ?1 AND "
		"json_extract(p.value, '$.host') = ?2 AND json_extract(p.value, '$.protocol') = ?3 LIMIT 1";
	yajl_val ports = cm_json_parse(ports_json, strlen(ports_json), err);
	if (!ports)
		return -1;
	yajl_val own = own_actual ? cm_json_parse(own_actual, strlen(own_actual), err) : NULL;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < ports->u.array.len; i++) {
		long long host = 0;
		cm_json_get_int(ports->u.array.values[i], "host", &host);
		const char *proto = cm_json_get_str(ports->u.array.values[i], "protocol");
		if (!host)
			continue;
		char field[32];
		snprintf(field, sizeof field, "ports[%zu].host", i);
		sqlite3_stmt *st = cm_db_stmt(&c->db, claimed, err);
		if (!st) {
			rc = -1;
			break;
		}
		sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, host);
		sqlite3_bind_text(st, 3, proto, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW) {
			rc = cm_err_set(err, 409, "conflict", "PORT_IN_USE", field,
					"host port %lld/%s is already assigned to container %s", host, proto, cm_col_str(st, 0));
			sqlite3_reset(st);
			break;
		}
		sqlite3_reset(st);
		bool mine = false;
		for (size_t k = 0; own && YAJL_IS_ARRAY(own) && k < own->u.array.len; k++) {
			long long oh = 0;
			cm_json_get_int(own->u.array.values[k], "host", &oh);
			const char *op = cm_json_get_str(own->u.array.values[k], "protocol");
			if (oh == host && op && !strcmp(op, proto))
				mine = true;
		}
		if (mine)
			continue;
		int udp = !strcmp(proto, "udp");
		int fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)host)};
		if (inet_pton(AF_INET, c->rn->cfg.publish_address, &sa.sin_addr) != 1)
			sa.sin_addr.s_addr = htonl(INADDR_ANY);
		if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno == EADDRINUSE)
			rc = cm_err_set(err, 409, "conflict", "PORT_IN_USE", field, "host port %lld/%s is already in use",
					host, proto);
		close(fd);
	}
	yajl_tree_free(ports);
	if (own)
		yajl_tree_free(own);
	return rc;
}

static bool port_conflict_message(const char *msg)
{
	return strstr(msg, "port is already allocated") || strstr(msg, "address already in use") ||
	       strstr(msg, "Address already in use");
}

/* POST /containers/{id}/start, mapping port clashes to 409. */
static int docker_start(struct ctx *c, const char *id, struct cm_error *err)
{
	char path[256];
	snprintf(path, sizeof path, "/containers/%s/start", id);
	bool held;
	if (binds_before_start(c, id, &held, err) < 0)
		return -1;
	struct cm_buf resp = {0};
	long st = cm_docker_call(&c->docker, "POST", path, NULL, &resp, 60, err);
	binds_after(held);
	int rc = 0;
	if (st < 0) {
		rc = -1;
	} else if (st != 204 && st != 304) {
		char msg[400];
		cm_docker_message(cm_buf_str(&resp), msg, sizeof msg);
		if (port_conflict_message(msg))
			rc = cm_err_set(err, 409, "conflict", "PORT_IN_USE", "ports", "a host port is already in use: %s", msg);
		else
			rc = cm_err_set(err, 500, "compose_error", "START_FAILED", NULL, "container did not start: %s", msg);
	}
	cm_buf_free(&resp);
	return rc;
}

static int docker_simple(struct ctx *c, const char *method, const char *path, long timeout, const char *what,
			 struct cm_error *err)
{
	struct cm_buf resp = {0};
	long st = cm_docker_call(&c->docker, method, path, NULL, &resp, timeout, err);
	int rc = 0;
	if (st < 0)
		rc = -1;
	else if (st >= 300 && st != 304 && !(st == 404 && !strcmp(method, "DELETE")))
		rc = docker_fail(err, st, &resp, what);
	cm_buf_free(&resp);
	return rc;
}

static int docker_remove(struct ctx *c, const char *name, struct cm_error *err)
{
	char path[256];
	snprintf(path, sizeof path, "/containers/%s?force=1&v=1", name);
	return docker_simple(c, "DELETE", path, 60, "remove", err);
}

/* Creates a container named name for spec; returns its id (caller frees) or NULL. An existing
 * container of that name carrying our cuid label is taken as already created (job re-run). */
/* Every named volume of s exists and is this stack's (Docker would quietly create a missing one). */
static int volumes_exist(struct ctx *c, const struct cm_spec *s, struct cm_error *err)
{
	yajl_val vols = s->volumes ? cm_json_parse(s->volumes, strlen(s->volumes), err) : NULL;
	int rc = 0;
	for (size_t i = 0; vols && YAJL_IS_ARRAY(vols) && i < vols->u.array.len && rc == 0; i++) {
		yajl_val m = vols->u.array.values[i];
		const char *type = cm_json_get_str(m, "type"), *name = cm_json_get_str(m, "source");
		if (!type || strcmp(type, "volume") || !name)
			continue;
		struct cm_buf p = {0}, r = {.limit = 1 << 20};
		cm_buf_puts(&p, "/volumes/");
		cm_buf_urlenc(&p, name);
		long st = cm_docker_call(&c->docker, "GET", cm_buf_str(&p), NULL, &r, 30, err);
		if (st == 200) {
			/* only this stack's volumes: another stack's, or one made outside the service
			 * (a local-driver volume can be a bind of any host path), is not found */
			struct cm_error perr;
			yajl_val insp = cm_json_parse(cm_buf_str(&r), r.len, &perr);
			if (!insp || !cm_volume_is_ours(insp, c->rn->instance))
				st = 404;
			if (insp)
				yajl_tree_free(insp);
		}
		if (st == 404)
			rc = cm_err_set(err, 404, "not_found", "VOLUME_NOT_FOUND", "volumes", "volume %s does not exist (POST /volumes creates it)",
					name);
		else if (st != 200)
			rc = st < 0 ? -1 : cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", "volumes", "volume inspect failed (%ld)", st);
		cm_buf_free(&p);
		cm_buf_free(&r);
	}
	if (vols)
		yajl_tree_free(vols);
	return rc;
}

static char *docker_create(struct ctx *c, const char *cuid, const char *name, const struct cm_spec *s,
			   struct cm_error *err)
{
	char dir[PATH_MAX];
	if (app_dir(c, cuid, dir, sizeof dir, true, err) < 0)
		return NULL;
	/* lets Debian's docker-compose v1 answer `docker-compose -p <cuid> ps|logs` in that directory */
	char compose[PATH_MAX];
	if (snprintf(compose, sizeof compose, "%s/%s/docker-compose.yml", c->rn->containers_dir, cuid) < (int)sizeof compose) {
		struct cm_buf y = {0};
		cm_buf_printf(&y, "# written by container-manager for `docker-compose -p %s ps|logs`; the service manages this container\n"
			      "version: \"2.4\"\nservices:\n  app:\n    image: \"%s\"\n", cuid, s->image);
		if (y.data && cm_write_file_atomic(compose, y.data, y.len, 0644) < 0)
			cm_warn("cannot write %s: %s", compose, strerror(errno));
		cm_buf_free(&y);
	}
	if (volumes_exist(c, s, err) < 0)
		return NULL;
	char *body = create_body(c, cuid, s, dir);
	if (!body) {
		cm_err_internal(err, "out of memory");
		return NULL;
	}
	char path[256];
	snprintf(path, sizeof path, "/containers/create?name=%s", name);
	bool held;
	if (binds_before_create(c, cuid, s, &held, err) < 0) {
		free(body);
		return NULL;
	}
	struct cm_buf resp = {0};
	long st = cm_docker_call(&c->docker, "POST", path, body, &resp, 60, err);
	binds_after(held);
	free(body);
	char *id = NULL;
	if (st == 201) {
		yajl_val v = cm_json_parse(cm_buf_str(&resp), resp.len, err);
		const char *i = v ? cm_json_get_str(v, "Id") : NULL;
		id = i ? strdup(i) : NULL;
		if (!id)
			cm_err_internal(err, "Docker create answered without an id");
		if (v)
			yajl_tree_free(v);
	} else if (st == 409) {
		yajl_val insp;
		if (docker_inspect(c, name, &insp, err) == 200) {
			const char *label = jstr(jpath(insp, "Config", "Labels"), "io.container-manager.cuid", NULL);
			if (label && !strcmp(label, cuid))
				id = strdup(jstr(insp, "Id", NULL));
			else
				cm_err_set(err, 409, "conflict", "NAME_IN_USE", NULL, "a foreign container is named %s", name);
			yajl_tree_free(insp);
		}
	} else if (st == 404) {
		cm_err_set(err, 404, "not_found", "IMAGE_NOT_FOUND", "image", "image %s is not available locally", s->image);
	} else if (st == 400) {
		char msg[400];
		cm_docker_message(cm_buf_str(&resp), msg, sizeof msg);
		cm_err_set(err, 400, "validation_error", "DOCKER_REJECTED", NULL, "Docker rejected the container: %s", msg);
	} else if (st > 0) {
		docker_fail(err, st, &resp, "create");
	}
	cm_buf_free(&resp);
	return id;
}

static int set_docker_id(struct ctx *c, const char *cuid, const char *id, const char *status, struct cm_error *err)
{
	static const char *sql = "UPDATE containers SET docker_id = ?, status = ?, updated_at = ?, "
				 "version = version + 1 WHERE cuid = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, cm_now_ms());
	sqlite3_bind_text(st, 4, cuid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return cm_db_fail(&c->db, err, "update container");
	return 0;
}

static int delete_row(struct ctx *c, const char *cuid, struct cm_error *err)
{
	static const char *sql = "DELETE FROM containers WHERE cuid = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return cm_db_fail(&c->db, err, "delete container");
	return 0;
}

static int remove_files(struct ctx *c, const char *cuid)
{
	char dir[PATH_MAX];
	if (snprintf(dir, sizeof dir, "%s/%s", c->rn->containers_dir, cuid) >= (int)sizeof dir)
		return -1;
	return cm_rm_rf(dir);
}

static int job_create(struct ctx *c, const char *cuid, char **result, struct cm_error *err)
{
	struct cm_spec spec;
	char status[16];
	if (cm_store_load_spec(&c->db, cuid, &spec, NULL, status, sizeof status, err) < 0)
		return -1;
	int rc = -1;
	char *id = NULL;
	if (check_host_ports(c, cuid, spec.ports, NULL, err) < 0)
		goto undo;
	id = docker_create(c, cuid, cuid, &spec, err);
	if (!id)
		goto undo;
	if (set_docker_id(c, cuid, id, "created", err) < 0 || refresh(c, cuid, err) < 0)
		goto out;
	{
		/* what GET /jobs/{id} shows for it: the container and where to find it */
		struct cm_buf b = {0};
		cm_buf_printf(&b, "{\"cuid\":\"%s\",\"docker_id\":\"%s\",\"url\":\"/containers/%s\"}", cuid, id, cuid);
		*result = b.data ? b.data : strdup("{}");
	}
	rc = 0;
	goto out;
undo:
	/* bad input or no image: leave nothing behind */
	{
		struct cm_error e2;
		if (remove_files(c, cuid) < 0)
			cm_warn("could not remove the files of %s", cuid);
		if (delete_row(c, cuid, &e2) < 0)
			cm_warn("could not remove the row of %s: %s", cuid, e2.message);
	}
out:
	free(id);
	cm_spec_free(&spec);
	return rc;
}

static int result_status(struct ctx *c, const char *cuid, char **result, struct cm_error *err)
{
	static const char *sql = "SELECT status FROM containers WHERE cuid = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_reset(st);
		return cm_db_fail(&c->db, err, "read status");
	}
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "cuid", cuid);
	cm_jg_kv_str(g, "status", cm_col_str(st, 0));
	yajl_gen_map_close(g);
	sqlite3_reset(st);
	*result = cm_jg_finish(g);
	return *result ? 0 : cm_err_internal(err, "out of memory");
}

static int state_error(struct cm_error *err, const char *action, const char *status)
{
	return cm_err_set(err, 422, "state_error", "INVALID_TRANSITION", NULL, "cannot %s a container that is %s",
			  action, status);
}

static int job_action(struct ctx *c, const char *kind, const char *cuid, yajl_val args, char **result,
		      struct cm_error *err)
{
	yajl_val insp;
	long st = docker_inspect(c, cuid, &insp, err);
	if (st < 0)
		return -1;
	if (st == 404)
		return cm_err_set(err, 409, "conflict", "CONTAINER_MISSING", NULL,
				  "the Docker container of %s is missing", cuid);
	char status[32];
	snprintf(status, sizeof status, "%s", jstr(insp, "State", "Status") ? jstr(insp, "State", "Status") : "");
	char id[128];
	snprintf(id, sizeof id, "%s", jstr(insp, "Id", NULL) ? jstr(insp, "Id", NULL) : cuid);
	yajl_tree_free(insp);
	long long timeout = -1;
	cm_json_get_int(args, "timeout", &timeout);
	char path[300];
	bool running = !strcmp(status, "running") || !strcmp(status, "restarting");
	bool paused = !strcmp(status, "paused");
	int rc = 0;
	if (!strcmp(kind, "start")) {
		if (paused)
			return state_error(err, "start", "paused (unpause it)");
		if (!running)
			rc = docker_start(c, id, err);
	} else if (!strcmp(kind, "stop")) {
		if (running || paused) {
			if (timeout >= 0)
				snprintf(path, sizeof path, "/containers/%s/stop?t=%lld", id, timeout);
			else
				snprintf(path, sizeof path, "/containers/%s/stop", id);
			rc = docker_simple(c, "POST", path, (timeout >= 0 ? timeout : 10) + 30, "stop", err);
		}
	} else if (!strcmp(kind, "restart")) {
		if (paused)
			return state_error(err, "restart", "paused (unpause it)");
		if (timeout >= 0)
			snprintf(path, sizeof path, "/containers/%s/restart?t=%lld", id, timeout);
		else
			snprintf(path, sizeof path, "/containers/%s/restart", id);
		struct cm_buf resp = {0};
		bool held;
		if (binds_before_start(c, id, &held, err) < 0)
			return -1;
		long s = cm_docker_call(&c->docker, "POST", path, NULL, &resp, (timeout >= 0 ? timeout : 10) + 60, err);
		binds_after(held);
		if (s < 0) {
			rc = -1;
		} else if (s != 204) {
			char msg[400];
			cm_docker_message(cm_buf_str(&resp), msg, sizeof msg);
			rc = port_conflict_message(msg)
				     ? cm_err_set(err, 409, "conflict", "PORT_IN_USE", "ports", "a host port is already in use: %s", msg)
				     : cm_err_set(err, 500, "compose_error", "RESTART_FAILED", NULL, "restart failed: %s", msg);
		}
		cm_buf_free(&resp);
	} else if (!strcmp(kind, "pause")) {
		if (!running || !strcmp(status, "restarting"))
			return state_error(err, "pause", status);
		snprintf(path, sizeof path, "/containers/%s/pause", id);
		rc = docker_simple(c, "POST", path, 30, "pause", err);
	} else if (!strcmp(kind, "unpause")) {
		if (!paused)
			return state_error(err, "unpause", status);
		snprintf(path, sizeof path, "/containers/%s/unpause", id);
		rc = docker_simple(c, "POST", path, 30, "unpause", err);
	}
	struct cm_error e2;
	if (refresh(c, cuid, rc < 0 ? &e2 : err) < 0 && rc == 0)
		return -1;
	if (rc < 0)
		return -1;
	return result_status(c, cuid, result, err);
}

static int job_delete(struct ctx *c, const char *cuid, yajl_val args, char **result, struct cm_error *err)
{
	static const char *mark = "UPDATE containers SET status = 'removing', updated_at = ?, version = version + 1 "
				  "WHERE cuid = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, mark, err);
	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, cm_now_ms());
	sqlite3_bind_text(st, 2, cuid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return cm_db_fail(&c->db, err, "mark removing");
	/* a cut name (a 60-byte cuid gave "CUID-ne") could name another container */
	char next[96];
	if (cm_pathf(next, sizeof next, "%s-next", cuid) < 0)
		return cm_err_internal(err, "container name too long");
	if (docker_remove(c, cuid, err) < 0 || docker_remove(c, next, err) < 0)
		return -1;
	yajl_val keep = cm_json_get(args, "keep_files");
	if (!YAJL_IS_TRUE(keep) && remove_files(c, cuid) < 0)
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "could not remove the files of %s", cuid);
	if (delete_row(c, cuid, err) < 0)
		return -1;
	*result = strdup("{}");
	return 0;
}

/* Replaces cuid's Docker container with one made from spec, keeping its running state.
 * The old container stays until the new one has started, so a failure changes nothing. */
static int recreate(struct ctx *c, const char *cuid, const struct cm_spec *spec, const char *row_status,
		    struct cm_error *err)
{
	char next[96];
	if (cm_pathf(next, sizeof next, "%s-next", cuid) < 0)
		return cm_err_internal(err, "container name too long");
	if (docker_remove(c, next, err) < 0)
		return -1;
	yajl_val old;
	long ost = docker_inspect(c, cuid, &old, err);
	if (ost < 0)
		return -1;
	char old_id[128] = "";
	bool want_running, want_paused;
	if (ost == 200) {
		const char *s = jstr(old, "State", "Status");
		want_running = s && (!strcmp(s, "running") || !strcmp(s, "paused") || !strcmp(s, "restarting"));
		want_paused = s && !strcmp(s, "paused");
		snprintf(old_id, sizeof old_id, "%s", jstr(old, "Id", NULL) ? jstr(old, "Id", NULL) : "");
		yajl_tree_free(old);
	} else {
		want_running = !strcmp(row_status, "running") || !strcmp(row_status, "paused");
		want_paused = !strcmp(row_status, "paused");
	}
	char *id = docker_create(c, cuid, next, spec, err);
	if (!id)
		return -1;
	char path[300];
	struct cm_error e2;
	if (want_running) {
		if (old_id[0]) {
			snprintf(path, sizeof path, "/containers/%s/stop?t=10", old_id);
			if (docker_simple(c, "POST", path, 60, "stop", err) < 0)
				goto undo;
		}
		if (docker_start(c, id, err) < 0) {
			if (old_id[0])
				docker_start(c, old_id, &e2);
			goto undo;
		}
		if (want_paused) {
			snprintf(path, sizeof path, "/containers/%s/pause", id);
			if (docker_simple(c, "POST", path, 30, "pause", err) < 0)
				cm_warn("%s: the recreated container could not be paused again: %s", cuid, err->message);
		}
	}
	if (old_id[0] && docker_remove(c, old_id, err) < 0)
		goto undo;
	snprintf(path, sizeof path, "/containers/%s/rename?name=%s", id, cuid);
	if (docker_simple(c, "POST", path, 30, "rename", err) < 0) {
		free(id);
		return -1;
	}
	int rc = set_docker_id(c, cuid, id, want_running ? "running" : "created", err);
	free(id);
	if (rc < 0)
		return -1;
	return refresh(c, cuid, err);
undo:
	docker_remove(c, id, &e2);
	free(id);
	return -1;
}

static int save_spec(struct ctx *c, const char *cuid, const struct cm_spec *s, struct cm_error *err)
{
	static const char *upd = "UPDATE containers SET image = ?, command = ?, env = ?, tags = ?, cpus = ?, "
				 "memory = ?, pids = ?, ports = ?, updated_at = ?, volumes = ?11, version = version + 1 WHERE cuid = ?10";
	static const char *del_tags = "DELETE FROM container_tags WHERE seq = (SELECT seq FROM containers WHERE cuid = ?)";
	static const char *ins_tags = "INSERT INTO container_tags(tag, seq) SELECT j.value, c.seq FROM containers c, "
				      "json_each(c.tags) j WHERE c.cuid = ?";
	if (cm_db_begin(&c->db, err) < 0)
		return -1;
	sqlite3_stmt *st = cm_db_stmt(&c->db, upd, err);
	if (!st)
		goto fail;
	sqlite3_bind_text(st, 1, s->image, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, s->command, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, s->env, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, s->tags, -1, SQLITE_STATIC);
	if (s->cpus > 0)
		sqlite3_bind_double(st, 5, s->cpus);
	sqlite3_bind_int64(st, 6, s->memory);
	sqlite3_bind_int64(st, 7, s->pids);
	sqlite3_bind_text(st, 8, s->ports, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, cm_now_ms());
	sqlite3_bind_text(st, 10, cuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 11, s->volumes ? s->volumes : "[]", -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto dbfail;
	const char *tag_sql[] = {del_tags, ins_tags};
	for (int i = 0; i < 2; i++) {
		st = cm_db_stmt(&c->db, tag_sql[i], err);
		if (!st)
			goto fail;
		sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			goto dbfail;
	}
	return cm_db_commit(&c->db, err);
dbfail:
	cm_db_fail(&c->db, err, "save spec");
fail:
	cm_db_rollback(&c->db);
	return -1;
}

static int job_update(struct ctx *c, const char *cuid, yajl_val args, char **result, struct cm_error *err)
{
	struct cm_spec spec;
	int64_t version;
	char status[16];
	if (cm_store_load_spec(&c->db, cuid, &spec, &version, status, sizeof status, err) < 0)
		return -1;
	long long expect = -1;
	cm_json_get_int(args, "if_match", &expect);
	int rc = -1;
	if (expect >= 0 && expect != version) {
		cm_err_set(err, 412, "precondition_failed", "PRECONDITION_FAILED", "If-Match",
			   "container changed while the update was queued (now ETag \"%lld\")", (long long)version);
		goto out;
	}
	/* the patch applies to the spec as it is now (jobs of one container run in order) */
	struct cm_spec next = {0};
	next.image = strdup(spec.image);
	next.command = strdup(spec.command);
	next.env = strdup(spec.env);
	next.tags = strdup(spec.tags);
	next.ports = strdup(spec.ports);
	next.volumes = strdup(spec.volumes ? spec.volumes : "[]");
	next.cpus = spec.cpus;
	next.memory = spec.memory;
	next.pids = spec.pids;
	unsigned changed = 0;
	if (!next.image || !next.command || !next.env || !next.tags || !next.ports || !next.volumes) {
		cm_err_internal(err, "out of memory");
		cm_spec_free(&next);
		goto out;
	}
	if (cm_spec_apply_patch(&c->rn->cfg, &next, cm_json_get(args, "patch"), &changed, err) < 0) {
		cm_spec_free(&next);
		goto out;
	}
	if (!changed) {
		cm_spec_free(&next);
		*result = strdup("{}");
		rc = 0;
		goto out;
	}
	if (changed == CM_CHANGED_RESOURCES) {
		yajl_val insp;
		long st = docker_inspect(c, cuid, &insp, err);
		if (st != 200) {
			if (st == 404)
				cm_err_set(err, 409, "conflict", "CONTAINER_MISSING", NULL, "the Docker container of %s is missing", cuid);
			cm_spec_free(&next);
			goto out;
		}
		char path[256];
		snprintf(path, sizeof path, "/containers/%s/update", jstr(insp, "Id", NULL));
		yajl_tree_free(insp);
		yajl_gen g = cm_jg_new();
		yajl_gen_map_open(g);
		cm_jg_kv_int(g, "Memory", next.memory);
		cm_jg_kv_int(g, "MemorySwap", next.memory);
		cm_jg_kv_int(g, "PidsLimit", next.pids);
		cm_jg_kv_int(g, "NanoCpus", next.cpus > 0 ? (long long)(next.cpus * 1e9 + 0.5) : 0);
		yajl_gen_map_close(g);
		char *body = cm_jg_finish(g);
		struct cm_buf resp = {0};
		long s = cm_docker_call(&c->docker, "POST", path, body, &resp, 30, err);
		free(body);
		if (s != 200) {
			if (s > 0) {
				char msg[400];
				cm_docker_message(cm_buf_str(&resp), msg, sizeof msg);
				cm_err_set(err, s == 400 ? 400 : 500, s == 400 ? "validation_error" : "compose_error",
					   "UPDATE_FAILED", "resources", "Docker refused the new limits: %s", msg);
			}
			cm_buf_free(&resp);
			cm_spec_free(&next);
			goto out;
		}
		cm_buf_free(&resp);
	} else if (recreate(c, cuid, &next, status, err) < 0) {
		cm_spec_free(&next);
		goto out;
	}
	rc = save_spec(c, cuid, &next, err);
	cm_spec_free(&next);
	if (rc == 0)
		*result = strdup("{}");
out:
	cm_spec_free(&spec);
	return rc;
}

static int job_ports(struct ctx *c, const char *cuid, yajl_val args, char **result, struct cm_error *err)
{
	static const char *own = "SELECT ports_actual FROM containers WHERE cuid = ?";
	struct cm_spec spec;
	char status[16];
	if (cm_store_load_spec(&c->db, cuid, &spec, NULL, status, sizeof status, err) < 0)
		return -1;
	int rc = -1;
	char *ports = json_of(cm_json_get(args, "ports"));
	char *actual = NULL;
	sqlite3_stmt *st = cm_db_stmt(&c->db, own, err);
	if (!st || !ports)
		goto out;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW && cm_col_str(st, 0))
		actual = strdup(cm_col_str(st, 0));
	sqlite3_reset(st);
	if (check_host_ports(c, cuid, ports, actual, err) < 0)
		goto out;
	free(spec.ports);
	spec.ports = ports;
	ports = NULL;
	if (recreate(c, cuid, &spec, status, err) < 0 || save_spec(c, cuid, &spec, err) < 0 || refresh(c, cuid, err) < 0)
		goto out;
	static const char *sel = "SELECT COALESCE(ports_actual, ports) FROM containers WHERE cuid = ?";
	st = cm_db_stmt(&c->db, sel, err);
	if (!st)
		goto out;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		struct cm_buf b = {0};
		cm_buf_printf(&b, "{\"cuid\":\"%s\",\"ports\":%s}", cuid, cm_col_str(st, 0));
		*result = b.data;
		rc = 0;
	} else {
		cm_db_fail(&c->db, err, "read ports");
	}
	sqlite3_reset(st);
out:
	free(ports);
	free(actual);
	cm_spec_free(&spec);
	return rc;
}

int exec_job(struct ctx *c, const char *kind, const char *cuid, yajl_val args, char **result, struct cm_error *err)
{
	*result = NULL;
	if (!cuid)
		return cm_err_internal(err, "job without a container");
	if (!strncmp(kind, "h.", 2))
		return harpoon_job(c, kind, cuid, args, result, err);
	if (!strncmp(kind, "app.", 4))
		return apps_job(c, kind, cuid, args, result, err);
	if (!strncmp(kind, "image.", 6) || !strncmp(kind, "volume.", 7))
		return images_job(c, kind, cuid, args, result, err);
	if (!strcmp(kind, "create"))
		return job_create(c, cuid, result, err);
	/* the row may have gone (deleted by an earlier job) while this one was queued */
	static const char *exists = "SELECT 1 FROM containers WHERE cuid = ?";
	sqlite3_stmt *st = cm_db_stmt(&c->db, exists, err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, cuid, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return cm_err_set(err, 404, "not_found", "CONTAINER_NOT_FOUND", "cuid", "container %s not found", cuid);
	if (rc != SQLITE_ROW)
		return cm_db_fail(&c->db, err, "read container");
	if (!strcmp(kind, "delete"))
		return job_delete(c, cuid, args, result, err);
	if (!strcmp(kind, "update"))
		return job_update(c, cuid, args, result, err);
	if (!strcmp(kind, "ports"))
		return job_ports(c, cuid, args, result, err);
	if (!strcmp(kind, "commit"))
		return job_commit(c, cuid, args, result, err);
	if (!strcmp(kind, "start") || !strcmp(kind, "stop") || !strcmp(kind, "restart") || !strcmp(kind, "pause") ||
	    !strcmp(kind, "unpause"))
		return job_action(c, kind, cuid, args, result, err);
	return cm_err_internal(err, "unknown job kind %s", kind);
}
