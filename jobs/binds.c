/* binds.c: the runner's check of a container's host binds right before Docker resolves them.
 *
 * Docker resolves a bind's source path at every create and start (and we cannot make it open a
 * descriptor we hand it), so checking the path is not enough on its own: whoever can change the
 * path between our check and Docker's resolution wins. The guard therefore holds one lock over
 * the check and the Docker call for every container with binds, and refuses:
 *  - a source that is no longer a symlink-free path below its root whose directories only root
 *    and the service can change (cm_bind_verify): 409 BIND_SOURCE_CHANGED;
 *  - a source that another container on the engine (this stack's or not, running or not) could
 *    swap because it has a writable mount of a directory above it, or a writable bind of ours
 *    that lies above another container's mount: 409 BIND_OVERLAP.
 * Containers are created and started under the lock and the engine's list is read under it, so
 * no two checks can pass for a pair of containers that would break the second rule; with both
 * rules nobody but root and the service can change a checked path while Docker resolves it.
 */
#include "config.h"
#include "runner.h"
#include "bindpath.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/file.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_BINDS 32

static pthread_mutex_t binds_mu = PTHREAD_MUTEX_INITIALIZER;
/* The lock between stacks: every stack on this host talks to the same engine, and one stack's
 * check must see the other's create. A file under /run/container-manager (the packaged run
 * directory and the parent of serve's), 0600: only processes of the user that made it can hold
 * it (no other host user can stall our starts); a stack of another user falls back to a lock
 * of its own run directory, and shares no bind roots with this one then (docs/API.md). */
#define HOST_LOCK "/run/container-manager/binds.lock"
static int host_lock = -1;

static void lock_binds(struct ctx *c)
{
	pthread_mutex_lock(&binds_mu);
	if (host_lock < 0) {
		host_lock = open(HOST_LOCK, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		char own[PATH_MAX];
		if (host_lock < 0 && cm_pathf(own, sizeof own, "%s/binds.lock", c->rn->cfg.run_dir) == 0)
			host_lock = open(own, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (host_lock < 0)
			cm_warn("no lock file for bind checks (%s): only this runner's threads are kept apart", strerror(errno));
	}
	while (host_lock >= 0 && flock(host_lock, LOCK_EX) < 0 && errno == EINTR)
		;
}

static void unlock_binds(void)
{
	if (host_lock >= 0)
		flock(host_lock, LOCK_UN);
	pthread_mutex_unlock(&binds_mu);
}

struct bind {
	const char *src; /* points into the JSON tree it came from */
	bool rw;
};

/* Binds of a spec's volumes JSON ([{type, source, read_only}]). */
static size_t spec_binds(yajl_val vols, struct bind *out)
{
	size_t n = 0;
	for (size_t i = 0; YAJL_IS_ARRAY(vols) && i < vols->u.array.len && n < MAX_BINDS; i++) {
		yajl_val m = vols->u.array.values[i];
		const char *type = cm_json_get_str(m, "type"), *src = cm_json_get_str(m, "source");
		if (type && !strcmp(type, "bind") && src) {
			out[n].src = src;
			out[n++].rw = !YAJL_IS_TRUE(cm_json_get(m, "read_only"));
		}
	}
	return n;
}

/* Binds of a container's inspect (HostConfig.Mounts of type bind: what create_body gave Docker;
 * the /app bind of HostConfig.Binds lies in the data directory, which no bind may reach). */
static size_t inspect_binds(yajl_val insp, struct bind *out)
{
	yajl_val ms = cm_json_get(cm_json_get(insp, "HostConfig"), "Mounts");
	size_t n = 0;
	for (size_t i = 0; YAJL_IS_ARRAY(ms) && i < ms->u.array.len && n < MAX_BINDS; i++) {
		yajl_val m = ms->u.array.values[i];
		const char *type = cm_json_get_str(m, "Type"), *src = cm_json_get_str(m, "Source");
		if (type && !strcmp(type, "bind") && src) {
			out[n].src = src;
			out[n++].rw = !YAJL_IS_TRUE(cm_json_get(m, "ReadOnly"));
		}
	}
	return n;
}

/* The checks of the header comment; self_id: the container being started (skipped), cuid: the
 * container's cuid (its other, stopped Docker container of a recreate is skipped too). */
static int check(struct ctx *c, const char *cuid, const char *self_id, const struct bind *b, size_t n,
		 struct cm_error *err)
{
	char why[400];
	for (size_t i = 0; i < n; i++) {
		if (cm_bind_verify(&c->rn->cfg, b[i].src, geteuid(), why, sizeof why) != CM_BIND_OK)
			return cm_err_set(err, 409, "conflict", "BIND_SOURCE_CHANGED", "volumes",
					  "refusing to mount: %s (it was checked when the container was defined)", why);
		for (size_t j = 0; j < i; j++)
			if (cm_bind_overlap(b[i].src, b[i].rw, b[j].src, b[j].rw))
				return cm_err_set(err, 409, "conflict", "BIND_OVERLAP", "volumes",
						  "%.200s and %.200s overlap with a writable one above the other", b[i].src, b[j].src);
	}
	struct cm_buf r = {.limit = 64 << 20};
	long st = cm_docker_call(&c->docker, "GET", "/containers/json?all=1", NULL, &r, 60, err);
	if (st != 200) {
		cm_buf_free(&r);
		return st < 0 ? -1 : cm_err_set(err, 500, "compose_error", "DOCKER_ERROR", NULL, "container list failed (%ld)", st);
	}
	yajl_val list = cm_json_parse(cm_buf_str(&r), r.len, err);
	cm_buf_free(&r);
	if (!list)
		return -1;
	int rc = 0;
	for (size_t k = 0; rc == 0 && YAJL_IS_ARRAY(list) && k < list->u.array.len; k++) {
		yajl_val o = list->u.array.values[k];
		const char *id = cm_json_get_str(o, "Id"), *state = cm_json_get_str(o, "State");
		const char *owner = cm_json_get_str(cm_json_get(o, "Labels"), "io.container-manager.cuid");
		if (id && self_id && !strncmp(id, self_id, strlen(self_id)))
			continue;
		if (owner && cuid && !strcmp(owner, cuid) && !(state && !strcmp(state, "running")))
			continue;
		yajl_val ms = cm_json_get(o, "Mounts");
		for (size_t m = 0; rc == 0 && YAJL_IS_ARRAY(ms) && m < ms->u.array.len; m++) {
			const char *src = cm_json_get_str(ms->u.array.values[m], "Source");
			bool rw = YAJL_IS_TRUE(cm_json_get(ms->u.array.values[m], "RW"));
			for (size_t i = 0; rc == 0 && src && src[0] == '/' && i < n; i++)
				if (cm_bind_overlap(b[i].src, b[i].rw, src, rw)) {
					yajl_val names = cm_json_get(o, "Names");
					const char *nm = YAJL_IS_ARRAY(names) && names->u.array.len ?
								 YAJL_GET_STRING(names->u.array.values[0]) : NULL;
					rc = cm_err_set(err, 409, "conflict", "BIND_OVERLAP", "volumes",
							"%.200s overlaps a mount of container %.80s (%.200s), and one of the two is "
							"writable and above the other",
							b[i].src, nm ? nm : id ? id : "?", src);
				}
		}
	}
	yajl_tree_free(list);
	return rc;
}

int binds_before_create(struct ctx *c, const char *cuid, const struct cm_spec *s, bool *held, struct cm_error *err)
{
	*held = false;
	struct bind b[MAX_BINDS];
	yajl_val vols = s->volumes ? cm_json_parse(s->volumes, strlen(s->volumes), err) : NULL;
	if (s->volumes && !vols)
		return -1;
	size_t n = spec_binds(vols, b);
	int rc = 0;
	if (n) {
		lock_binds(c);
		rc = check(c, cuid, NULL, b, n, err);
		if (rc < 0)
			unlock_binds();
		else
			*held = true;
	}
	if (vols)
		yajl_tree_free(vols);
	return rc;
}

int binds_before_start(struct ctx *c, const char *id, bool *held, struct cm_error *err)
{
	*held = false;
	yajl_val insp;
	long st = docker_inspect(c, id, &insp, err);
	if (st < 0)
		return -1;
	if (st != 200)
		return 0; /* Docker's own start answers for a container that is gone */
	struct bind b[MAX_BINDS];
	size_t n = inspect_binds(insp, b);
	int rc = 0;
	if (n) {
		const char *cuid = cm_json_get_str(cm_json_get(cm_json_get(insp, "Config"), "Labels"), "io.container-manager.cuid");
		const char *full = cm_json_get_str(insp, "Id");
		lock_binds(c);
		rc = check(c, cuid, full ? full : id, b, n, err);
		if (rc < 0)
			unlock_binds();
		else
			*held = true;
	}
	yajl_tree_free(insp);
	return rc;
}

void binds_after(bool held)
{
	if (held)
		unlock_binds();
}
