/* runner.h: the job runner's shared state and the pieces each file provides. */
#ifndef CM_RUNNER_H
#define CM_RUNNER_H

#include <pthread.h>
#include "cm.h"
#include <stdio.h>
#include "cm_config.h"
#include "db.h"
#include "docker.h"
#include "json.h"
#include "spec.h"
#include "store.h"

struct runner {
	struct cm_config cfg;
	char db_path[PATH_MAX];
	char sock_path[PATH_MAX];
	char containers_dir[PATH_MAX];
	unsigned uid, gid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned wake_seq;          /* bumped on every wake-up */
	int done_pipe[2];           /* executors write finished job ids here (8 bytes each) */
	volatile int stop;
	volatile int docker_ok;
	char compose_version[128];
	char instance[17];          /* labels this database's containers: several stacks may share a dockerd */
	char build_cgroup[64];      /* cgroup parent of every build step (BUILD_PIDS), "" = none (build.c) */
};

/* A worker thread's own connections. */
struct ctx {
	struct runner *rn;
	struct cm_db db;
	struct cm_docker docker;
	int64_t job_id; /* the job being run (executors) */
};

int ctx_open(struct ctx *c, struct runner *rn, struct cm_error *err);
void ctx_close(struct ctx *c);

/* exec.c: runs one claimed job; returns 0 with *result (JSON, caller frees) or -1 with err. */
int exec_job(struct ctx *c, const char *kind, const char *cuid, yajl_val args, char **result, struct cm_error *err);
/* Inspects container name_or_id; returns HTTP status (200, 404, ...) or -1; *out owned by caller. */
long docker_inspect(struct ctx *c, const char *name, yajl_val *out, struct cm_error *err);
/* Runs argv in running container id (a non-interactive exec): its multiplexed output goes to
 * out (NULL: discarded) until it ends. Returns 0 with its exit code in *code, or -1 with err
 * (409 CONTAINER_NOT_RUNNING; 408 when it outlived timeout_s). */
int docker_exec_argv(struct ctx *c, const char *id, yajl_val argv, cm_docker_chunk_cb out, void *ud, long timeout_s,
		     long long *code, struct cm_error *err);
/* Copies Docker's view of a container (inspect output) into its row when the ids match. */
int sync_row(struct ctx *c, const char *cuid, yajl_val inspect, struct cm_error *err);
/* Whether a queued or running job exists for cuid (1/0, -1 on error). */
int pending_job(struct ctx *c, const char *cuid);

/* binds.c: the last check of a container's host binds before Docker resolves them (create,
 * start, restart). On success *held says whether the binds lock is held: the caller makes its
 * Docker call and then calls binds_after(*held). On failure nothing is held (409 BIND_OVERLAP,
 * BIND_SOURCE_CHANGED). */
int binds_before_create(struct ctx *c, const char *cuid, const struct cm_spec *s, bool *held, struct cm_error *err);
int binds_before_start(struct ctx *c, const char *id, bool *held, struct cm_error *err);
void binds_after(bool held);

/* events.c */
void *events_thread(void *arg);
void *monitor_thread(void *arg);
int reconcile_all(struct ctx *c, struct cm_error *err);
void detect_compose(struct runner *rn);

/* exec.c: HostConfig confinement and limits shared by every container the runner creates */
void emit_confinement(yajl_gen g, int64_t memory, int64_t pids, double cpus);
void emit_exposed_ports(yajl_gen g, yajl_val ports);

/* build.c: one image build through the Engine API. The context (a tar) comes from mem or file;
 * the output goes to a builds row (name, hash, tag) and the job's progress while it runs.
 * Returns 0 (image_id, 80 bytes, gets the new image's id when not NULL) or -1 with err
 * (422 BUILD_FAILED with the build's own error). */
struct build_opts {
	const char *name, *hash, *tag, *dockerfile, *labels_json, *what;
	const char *mem;
	size_t mem_len;
	FILE *file;
};
int docker_build(struct ctx *c, const struct build_opts *o, char *image_id, struct cm_error *err);
/* At start (after rn->instance is known), and before a build until Docker has answered once:
 * the cgroup that carries BUILD_PIDS for every build step of this instance, in
 * rn->build_cgroup (written once, under a lock); left "" with a warning where it cannot be
 * made. Thread-safe. */
void build_limits_setup(struct ctx *c);
/* At stop: removes that cgroup (in every hierarchy Docker made it in) once no build uses it. */
void build_limits_teardown(struct runner *rn);
/* 1 if the image exists, 0 if not, -1 with err */
int docker_image_exists(struct ctx *c, const char *ref, struct cm_error *err);

/* images.c: image.build / image.delete (key "image:REF") and a container's commit */
int images_job(struct ctx *c, const char *kind, const char *key, yajl_val args, char **result, struct cm_error *err);
int job_commit(struct ctx *c, const char *cuid, yajl_val args, char **result, struct cm_error *err);
void images_sweep(struct ctx *c);
/* Path of a staged context (a plain name inside DATA/builds). */
int context_path(struct ctx *c, const char *name, char *out, size_t outsz, struct cm_error *err);
/* Builds tag from the staged context at path (re-packed to build_dir; dockerfile "" = found):
 * 0 with image_id (and the container file used), or -1 with err. The context stays. */
int build_context(struct ctx *c, const char *path, const char *build_dir, const char *dockerfile, const char *tag,
		  const char *what, char image_id[80], char *used_dockerfile, size_t udsz, struct cm_error *err);

/* apps.c: app.create, app.update, app.delete, app.restart, app.run (keys "app:NAME", "apprun:NAME")
 * and the health checker */
int apps_job(struct ctx *c, const char *kind, const char *key, yajl_val args, char **result, struct cm_error *err);
void *health_thread(void *arg);

/* harpoon.c: start_container's jobs (kinds "h.*", key "h:NAME") */
int harpoon_job(struct ctx *c, const char *kind, const char *key, yajl_val args, char **result, struct cm_error *err);
int harpoon_reconcile(struct ctx *c, struct cm_error *err);
void harpoon_event(struct ctx *c, const char *image, const char *action, const char *id);

/* auditd.c */
void *audit_thread(void *arg);

#endif
